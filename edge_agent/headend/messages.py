"""The bodies of the messages the gateway publishes, built from what the store holds.

Outbox rows reference the data they report (a range of ledger or reading rows, one event, a
list of ledger ids) so each fact is written once; this module turns such a row into the message
body of docs/mqtt.md when the link sends it.  `gw` and `seq` are added by the link.
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.errors import Malformed
from edge_agent.store import Store
from edge_agent.store.database import wire_time

VERSION = 1  # the `v` of every message (docs/schemas/README.md)
TIME_KEYS = ("ts", "started_at", "since", "at")

PER_MESSAGE = 500  # ledger entries or readings in one message at most


def on_the_wire(body: dict[str, Any]) -> dict[str, Any]:
    """Times in the contract's format (whole seconds, `Z`) at the top, in entries, readings
    and event details; the database keeps its own precision."""
    out = dict(body)
    for key in TIME_KEYS:
        if isinstance(out.get(key), str):
            out[key] = wire_time(out[key])
    for key in ("entries", "readings"):
        if isinstance(out.get(key), list):
            out[key] = [on_the_wire(item) if isinstance(item, dict) else item
                        for item in out[key]]
    if isinstance(out.get("detail"), dict):
        out["detail"] = on_the_wire(out["detail"])
    return out


def render(store: Store, kind: str, payload: str) -> dict[str, Any] | None:
    """The message body of an outbox row (None: the rows it pointed at are gone)."""
    body = _render(store, kind, payload)
    return None if body is None else on_the_wire(body)


def _render(store: Store, kind: str, payload: str) -> dict[str, Any] | None:
    data = json.loads(payload)
    if "ids" in data:  # a resend of chosen ledger entries (head-end `sync`)
        entries = store.ledger_entries_by_id(data["ids"])
        return {"entries": entries} if entries else None
    ref = data.get("ref")
    if ref is None:
        return data
    first, last = ref
    if kind == "ledger":
        entries = store.ledger_range(first, last)
        return {"entries": entries} if entries else None
    if kind == "events":
        return store.event(first)
    if kind == "telemetry":
        readings = store.readings_range(first, last)
        return {"readings": [{**r, "ts": wire_time(r["ts"])} for r in readings]} \
            if readings else None
    raise Malformed(f"outbox row of kind {kind!r} cannot hold a reference")
