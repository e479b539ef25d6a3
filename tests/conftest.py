"""Fixtures several test files ask for by name (none is autouse: nothing here changes a test
that does not ask)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: on a shared 2-core machine OpenMP's second thread
    mostly waits (and the bit-equality tests compare runs made with the same thread count).
    A file asks with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
