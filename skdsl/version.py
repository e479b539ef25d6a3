"""skdsl's version, in a module of its own so that the modules recording it (checkpoints,
`doctor`, `--version`) need not import the package root. pyproject.toml reads it from here,
and `skdsl.__version__` re-exports it."""

__version__ = "0.1.0"
