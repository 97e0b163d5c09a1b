"""The checkout stays small enough to travel to a lent GPU machine, where ``scripts/device_validate.sh`` runs
``bench validate``: such a call sends the tracked files and the carried nnU-Net wheels (``.whl``, 0.5 MB), 64 MiB
at most. On 2026-11-28 a call was refused at 66.6 MB of tracked files, before the validation fixtures were written
compressed (``reports/validation/README.md``, "The next GPU session"); each committed validation run adds about
8 MB, so this fails before a GPU session finds out."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a lent GPU machine's call takes at most (the device tool's limit on the working tree that travels)
LIMIT = 64 * 2**20
#: room for the carried wheels (``../shared/gpu/prepare-wheels.sh .whl``: 0.5 MB on 2026-11-28)
WHEELS = 2**20


def test_the_tracked_files_fit_a_lent_gpu_call():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are what a GPU call sends")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    files = [ROOT / p for p in listed.split("\0") if p]
    total = sum(f.stat().st_size for f in files if f.is_file())
    assert len(files) > 100 and total > 10 * 2**20  # the listing is the repository's, not an empty one
    assert total + WHEELS <= LIMIT, (
        f"the tracked files are {total / 1e6:.1f} MB: with the wheels over the 64 MiB a lent GPU's call takes. "
        "Compress or leave out what a validation run adds (its snapshots, fixtures) before committing it")
