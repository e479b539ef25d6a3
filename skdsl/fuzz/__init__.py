"""Fuzzers that hunt for internal errors and hangs: broken spec texts through the library
(spec) and random command lines through the installed program (cli); run by
`python -m skdsl.commands.fuzz`.
"""
