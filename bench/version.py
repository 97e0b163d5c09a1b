"""Which code made a record: segmem's version and the checkout's git commit (``.dirty`` when the code
under version control has local changes). Records carry it, and a resumed sweep re-runs configurations
recorded by another version, since their figures may no longer be what this code measures."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("bench", "architectures")


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def git_commit() -> str | None:
    out = _git("rev-parse", "--short=12", "HEAD")
    return (out.stdout.strip() or None) if out is not None and out.returncode == 0 else None


@functools.cache
def code_version() -> str:
    try:
        version = metadata.version("segmem")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = git_commit()
    if commit is None:
        return version
    diff = _git("diff", "--quiet", "HEAD", "--", *CODE_DIRS)
    dirty = diff is not None and diff.returncode == 1
    return f"{version}+{commit}{'.dirty' if dirty else ''}"
