import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def cpu_only():
    if torch.cuda.is_available():
        pytest.skip("asserts CPU-only behaviour")
