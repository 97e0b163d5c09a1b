"""The checkout stays small enough to travel to a lent GPU machine, where ``scripts/device_validate.sh`` runs
``bench validate``: such a call sends the tracked files and the carried nnU-Net wheels (``.whl``), 64 MiB at most.
On 2026-11-28 a call was refused with 63.5 MiB of tracked files and 0.5 MiB of wheels, before the validation
fixtures were written compressed (``reports/validation/README.md``, "The next GPU session"); each committed
validation run adds about 7.5 MiB, so this fails before a GPU session finds out. Files not committed yet are left
out: CI's clean clone has none."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
#: what a lent GPU machine's call takes at most (the device tool's limit on the working tree that travels)
LIMIT = 64 * MiB
#: room for the carried wheels: 0.5 MiB on 2026-11-28 (``../shared/gpu/prepare-wheels.sh .whl``), with as much
#: again to spare
WHEELS = 1 * MiB


def committed_bytes() -> tuple[int, int]:
    """The committed files (``HEAD``) as (count, bytes), from git's object store: the same in a sparse checkout or
    with a file deleted from the working tree. Skips where git cannot say (no git, not a checkout, a checkout git
    refuses to read, e.g. one owned by another user), with git's own reason."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the committed files are what a GPU call sends")
    res = subprocess.run(["git", "ls-tree", "-r", "-l", "-z", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"git cannot list the committed files here: {res.stderr.strip()}")
    # each entry: "<mode> <type> <object> <size>\t<path>"; a submodule's size is "-"
    sizes = [entry.split("\t", 1)[0].split()[3] for entry in res.stdout.split("\0") if entry]
    return len(sizes), sum(int(s) for s in sizes if s.isdigit())


def test_the_committed_files_fit_a_lent_gpu_call():
    count, total = committed_bytes()
    assert count > 100 and total > 10 * MiB, (count, total)  # the listing is the repository's, not an empty one
    assert total + WHEELS <= LIMIT, (
        f"the committed files are {total / MiB:.1f} MiB: with {WHEELS / MiB:.0f} MiB of wheels over the 64 MiB a "
        "lent GPU's call takes. Compress or leave out what a validation run adds (its snapshots, fixtures) before "
        "committing it")
