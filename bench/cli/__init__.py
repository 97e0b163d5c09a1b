"""The ``bench`` command line (Typer + rich). Parsing, one-line validation and progress only: the
sweep engine is :mod:`bench.sweep`, measurement :mod:`bench.measure`, training :mod:`bench.train`,
reading results :mod:`bench.results`. Option vocabularies come from :mod:`bench.options`.

One module per family of commands, each registering its commands on the one :data:`app` of
:mod:`.common` as it is imported (the order here is ``bench --help``'s).
"""

from __future__ import annotations

# isort: off
from .common import app
from . import run, validation, regression, results, plans, paper  # noqa: F401,E402  (each registers its commands)
# isort: on

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
