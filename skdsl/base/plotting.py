"""matplotlib, the optional library of skdsl's figures (the `plot` extra), imported one way.

On import matplotlib makes a config and a font-cache folder under $HOME (or $MPLCONFIGDIR). A
command must write nothing but its outputs: where HOME is no existing absolute folder (unset,
relative, missing), those folders go to a temporary folder, removed at exit, instead of being
created wherever the path points (a relative HOME made them in the current folder).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile


def available() -> bool:
    """Whether matplotlib is installed, without importing it (a None in sys.modules, as tests
    set it, reads as not installed)."""
    if "matplotlib" in sys.modules:
        return sys.modules["matplotlib"] is not None
    return importlib.util.find_spec("matplotlib") is not None


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    matplotlib = matplotlib_module()
    import matplotlib.pyplot as plt

    del matplotlib
    return plt


def matplotlib_module():
    """matplotlib on the Agg backend; ImportError where it is not installed."""
    if "MPLCONFIGDIR" not in os.environ:
        home = os.environ.get("HOME", "")
        if not (os.path.isabs(home) and os.path.isdir(home)):
            folder = tempfile.mkdtemp(prefix="skdsl-matplotlib-")
            atexit.register(shutil.rmtree, folder, True)
            os.environ["MPLCONFIGDIR"] = folder
    import matplotlib

    matplotlib.use("Agg")
    return matplotlib
