import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_thread():
    """One OpenMP thread for the test (tiny convolutions on a shared 2-core machine run far faster so)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def miniature(tmp_path_factory):
    """The miniature real datasets (corda.data.miniature), written once per session: 2 labelled GTA5 frames and
    one without its label, 2 SYNTHIA frames, 2 + 1 Cityscapes train + val items, all at true size. Read-only: copy before
    changing a file."""
    from corda.data.miniature import make_miniature

    return make_miniature(tmp_path_factory.mktemp("miniature"), gta5=2, gta5_unlabelled=1, synthia=2,
                          cityscapes_train=2, cityscapes_val=1)
