"""``python -m bench.cli``: the ``bench`` command."""

from . import app

app()
