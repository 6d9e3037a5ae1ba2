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

PER_MESSAGE = 500  # ledger entries or readings in one message at most


def render(store: Store, kind: str, payload: str) -> dict[str, Any] | None:
    """The message body of an outbox row (None: the rows it pointed at are gone)."""
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
        return {"readings": [{**r, "ts": r["ts"].isoformat()} for r in readings]} \
            if readings else None
    raise Malformed(f"outbox row of kind {kind!r} cannot hold a reference")
