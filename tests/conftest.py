"""Fixtures several test files ask for by name (none is autouse: nothing here changes a test
that does not ask), and one process-wide setting made before torch loads.

OMP_WAIT_POLICY=PASSIVE, as `skdsl train` sets it for itself (skdsl/train/threads.py): torch is
imported here, before any test could ask for it, so without it libgomp's threads spin at the
end of every parallel region, and on a shared 2-core machine a spinning thread takes the core
from the one still working (a training run in this process took 5× as long beside a busy
neighbour). Waiting passively changes no result, only who waits how; a value already set is
kept."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: on a shared 2-core machine OpenMP's second thread
    mostly waits (and the bit-equality tests compare runs made with the same thread count).
    A file asks with `pytestmark = pytest.mark.usefixtures("one_thread")`. A training run sets
    its own thread count for its length (TrainConfig.threads, default: the process's share of
    its cores): a file whose runs must use one thread passes threads=1 to them too, as
    tests/train/test_train_runner.py does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
