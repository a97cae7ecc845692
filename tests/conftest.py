import os
from collections.abc import Iterator

import pytest
import torch

# Two cores are all CI has; more threads than cores only adds contention. An explicit OMP_NUM_THREADS wins: on a
# busy machine OMP_NUM_THREADS=1 is 10x faster than two spinning threads (0.5 s against 6.3 s for one forward).
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed_and_guard_grad_mode() -> Iterator[None]:
    torch.manual_seed(0)
    yield
    # A test that leaves autograd off breaks every test after it, far from the cause: fail it here.
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd disabled (torch.set_grad_enabled(False) leaked)")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``): a
    second thread buys nothing there and, on a busy machine, costs a lot in contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
