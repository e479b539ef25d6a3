"""A fuzzed command runs its own exit handlers, as `skdsl` in a process of its own does (seed 204:
matplotlib's temporary config folder, removed by an atexit handler, was reported as left in
TMPDIR because the forked case ended with os._exit)."""

import atexit
import os
import shutil
import tempfile

from skdsl.fuzz import cli as cli_fuzz


def _makes_a_temporary_folder_removed_at_exit(argv):
    folder = tempfile.mkdtemp(prefix="skdsl-exit-test-")
    atexit.register(shutil.rmtree, folder, True)
    print("made", folder)
    return 0


def _leaves_a_temporary_folder(argv):
    print("made", tempfile.mkdtemp(prefix="skdsl-exit-test-"))
    return 0


def _says_something(argv):
    print("something")
    return 0


def test_a_folder_removed_at_exit_is_no_side_effect():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["x"]), _makes_a_temporary_folder_removed_at_exit)
    assert outcome.kind == "ok", outcome.detail


def test_a_folder_left_behind_still_is():
    outcome = cli_fuzz.run_case(cli_fuzz.Case(["x"]), _leaves_a_temporary_folder)
    assert outcome.kind == "side-effect" and "TMPDIR" in outcome.detail


def test_the_fuzzers_own_exit_handlers_do_not_run_in_a_case(tmp_path):
    marker = tmp_path / "ran"
    atexit.register(marker.touch)
    try:
        cli_fuzz.run_case(cli_fuzz.Case(["x"]), _says_something)
        assert not marker.exists()
    finally:
        atexit.unregister(marker.touch)
    assert os.path.isdir(tmp_path)
