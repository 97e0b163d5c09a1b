import os

import pytest
import torch

torch.set_num_threads(2)
# CPU timing repeats until its spread is small, for up to a minute per configuration: the tests check
# what is recorded, not how stable a time is, so their workers (which inherit this) time briefly
os.environ.setdefault("SEGMEM_CPU_TIME_BUDGET_S", "1")


@pytest.fixture
def cpu_only():
    if torch.cuda.is_available():
        pytest.skip("asserts CPU-only behaviour")
