"""``python -m ncollapse`` is the ``ncollapse`` command."""

from .cli import run

run()
