"""Building and signing head-end commands: the one implementation the `edge-agent headend`
verbs, the head-end simulator (firmware_sim/headend.py) and the tests share."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.headend.keys import sign

_ids = itertools.count(1)


def wire(moment: datetime) -> str:
    """A command time: RFC 3339 UTC, whole seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_command_id() -> str:
    return f"c-{next(_ids):04d}-{time.time_ns()}"


def envelope(kind: str, args: dict[str, Any], gw: str, key: Any, kid: str, *,
             cmd_id: str | None = None, issued: datetime | None = None,
             ttl: timedelta = timedelta(minutes=10)) -> dict[str, Any]:
    """A signed envelope `{"cmd": ..., "kid": ..., "sig": ...}` (sig None without a key)."""
    issued = issued or datetime.now(UTC)
    cmd = {"v": 1, "id": cmd_id or new_command_id(), "type": kind, "gw": gw,
           "issued_at": wire(issued), "expires_at": wire(issued + ttl), "args": args}
    return {"cmd": cmd, "kid": kid, "sig": sign(cmd, key) if key is not None else None}
