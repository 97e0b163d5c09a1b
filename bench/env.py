"""The environment a record was measured in, so that results of different machines mix honestly."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


@functools.cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def capture(cuda: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        "env_torch": torch.__version__,
        "env_python": platform.python_version(),
        "env_os": platform.platform(),
        "env_cpu": platform.processor() or platform.machine(),
        "env_cpu_count": torch.get_num_threads(),
        "env_cuda": torch.version.cuda,
        "env_cudnn": None,
        "env_driver": None,
        "env_gpu_name": None,
        "env_gpu_memory_bytes": None,
        "git_commit": git_commit(),
    }
    if cuda and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["env_cudnn"] = torch.backends.cudnn.version()
        env["env_gpu_name"] = props.name
        env["env_gpu_memory_bytes"] = props.total_memory
        try:
            import pynvml

            pynvml.nvmlInit()
            env["env_driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # NVML missing or unusable: the figure is optional
            pass
    return env
