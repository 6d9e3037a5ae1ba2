"""The `edge-agent` command line: one click group, verbs in submodules imported on use.

`root.VERBS` names each verb's module: `edge-agent --help` and `edge-agent status` then load
only what they need (start-up time on a gateway)."""

from __future__ import annotations

from .root import main

__all__ = ["main"]
