"""The environment a record was measured in, so that results of different machines mix honestly."""

from __future__ import annotations

import platform
from typing import Any

import torch

from .. import record as R
from ..version import code_version, git_commit


def capture(cuda: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        R.ENV_TORCH: torch.__version__,
        R.ENV_PYTHON: platform.python_version(),
        R.ENV_OS: platform.platform(),
        R.ENV_CPU: platform.processor() or platform.machine(),
        R.ENV_CPU_COUNT: torch.get_num_threads(),
        R.ENV_CUDA: torch.version.cuda,
        R.ENV_CUDNN: None,
        R.ENV_DRIVER: None,
        R.ENV_GPU_NAME: None,
        R.ENV_GPU_MEMORY: None,
        R.GIT_COMMIT: git_commit(),
        R.CODE_VERSION: code_version(),
    }
    if cuda and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env[R.ENV_CUDNN] = torch.backends.cudnn.version()
        env[R.ENV_GPU_NAME] = props.name
        env[R.ENV_GPU_MEMORY] = props.total_memory
        try:
            import pynvml

            pynvml.nvmlInit()
            env[R.ENV_DRIVER] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # NVML missing or unusable: the figure is optional
            pass
    return env
