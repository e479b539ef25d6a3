"""Moved to skdsl/commands/train.py; this alias remains until no caller imports it from here."""

from ..commands.train import *  # noqa: F401,F403
from ..commands.train import __all__  # noqa: F401
