"""base/plotting.py: matplotlib is imported one way, and writes nothing outside a command's
outputs (a fuzz case: HOME='missing-home' made matplotlib create that folder in the cwd)."""

import os
import subprocess
import sys

import pytest

from skdsl.base import plotting


def test_available_reads_a_blocked_import_as_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not plotting.available()


@pytest.mark.parametrize("home", ["missing-home", ""])
def test_a_relative_or_missing_home_creates_nothing_where_the_command_runs(tmp_path, home):
    pytest.importorskip("matplotlib")
    environment = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "HOME")}
    if home:
        environment["HOME"] = home
    code = ("from skdsl.base import plotting; plt = plotting.pyplot(); "
            "figure = plt.figure(); figure.savefig('out.png')")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, check=True,
                   timeout=120)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
