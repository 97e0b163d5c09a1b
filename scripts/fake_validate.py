"""``bench validate`` on the fake CUDA backend (``tests/fake_cuda.py``: CUDA's calls answered on the CPU),
its grid narrowed to one small cube in fp32 so that the CPU can run it: to try the command, and to time
what it costs besides the GPU's own work (worker starts, predictions, snapshots, fixtures), without a GPU.
The fake device's steps run on the CPU, so its figures are not a GPU's time.

    python scripts/fake_validate.py OUT [--arch unet --arch vnet] [--size 32]

writes what ``bench validate --out OUT/v --fixtures OUT/fx`` writes, and prints its output and wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

import fake_cuda  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from bench.cli import app  # noqa: E402
from bench.results import validate as V  # noqa: E402
from bench.sweep import executor  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("out", type=Path, help="where bench validate writes (OUT/v) and its fixtures go (OUT/fx)")
    ap.add_argument("--arch", action="append", default=None, help="architectures (default: unet and vnet)")
    ap.add_argument("--size", type=int, default=32, help="the cube's edge (default 32)")
    a = ap.parse_args()
    executor.WORKER = fake_cuda.WORKER
    torch.cuda.is_available = lambda: True
    torch.cuda.get_device_name = lambda device=None: fake_cuda.NAME
    V.two_sizes = lambda spec: [(a.size,) * 3]
    V.PRECISIONS = ("fp32",)
    args = ["validate", "--out", str(a.out / "v"), "--fixtures", str(a.out / "fx")]
    for name in a.arch or ["unet", "vnet"]:
        args += ["--arch", name]
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, args)
    print(res.output, end="")
    print(f"exit {res.exit_code}, {time.perf_counter() - t0:.1f} s")
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
