"""The `edge-agent` command line: one click group, verbs in submodules."""

from __future__ import annotations

from . import backup as _backup  # noqa: F401
from . import billing as _billing  # noqa: F401  (registers verbs)
from . import daemon as _daemon  # noqa: F401
from . import demo as _demo  # noqa: F401
from . import frame as _frame  # noqa: F401
from . import keys as _keys  # noqa: F401
from . import sim as _sim  # noqa: F401
from . import state as _state  # noqa: F401
from . import technician as _technician  # noqa: F401
from .root import main

__all__ = ["main"]
