"""Text -> spec: the grammar, the Lark parser and its syntax tree (parser, syntax), expansion of
parameters, loops, conditions and imports into a validated `core.spec.Network` (expand), the
standard library of .sk files (std/), the zoo's names (zoo) and loading a path, name or JSON
spec (loading). No torch and no rich: parsing and validating a spec stays fast to import.
"""
