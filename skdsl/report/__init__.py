"""Counts -> text: the paper-shaped table of one network (network), side-by-side comparison of
several (compare) and the results tables and pages of the paper's experiments (tables).
"""
