"""The `edge-agent` command line: one click group, verbs in submodules."""

from __future__ import annotations

from . import frame as _frame  # noqa: F401  (registers verbs)
from . import technician as _technician  # noqa: F401
from .root import main

__all__ = ["main"]
