"""Spec -> IR -> counts, without torch: the validated spec model (spec), its lowering to one
node per primitive op with every shape inferred (graph), exact parameters, multiply-adds and
receptive fields (analysis) and the memory a network needs (resources).
"""
