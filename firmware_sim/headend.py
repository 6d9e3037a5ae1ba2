"""A head-end simulator: the other end of the MQTT contract, for tests and the demo.

It subscribes to a gateway's topics, signs commands with an Ed25519 key (made by
`edge-agent keys create`), waits for their results, and checks what arrives: gaps and
duplicates in `seq`, ledger entries by id, the balance each entry reports.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.headend.keys import load_private
from edge_agent.headend.signing import envelope


class HeadEnd:
    def __init__(self, host: str, port: int, gateway: str, key_file: Path | None = None,
                 kid: str = "headend-1", prefix: str = "edge", client_id: str = "headend-sim",
                 tls: dict[str, str] | None = None) -> None:
        self.gateway = gateway
        self.kid = kid
        self.key = load_private(key_file) if key_file else None
        self.base = f"{prefix}/{gateway}"
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.seqs: list[int] = []
        self.status: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        if tls:
            self.client.tls_set(ca_certs=tls.get("ca"), certfile=tls.get("cert"),
                                keyfile=tls.get("key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 2)
        self.host, self.port = host, port

    # -- connection -----------------------------------------------------------------------
    def start(self) -> HeadEnd:
        self.client.connect(self.host, self.port, 30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> HeadEnd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        client.subscribe(f"{self.base}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic.removeprefix(self.base + "/")
        if topic == "cmd":
            return  # our own commands
        body = json.loads(message.payload)
        with self._cond:
            if topic == "status":
                self.status = body
            else:
                self.seqs.append(body["seq"])
            self.messages.append((topic, body))
            self._cond.notify_all()

    # -- looking at what arrived ----------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def bodies(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b in self.messages if t == topic]

    def readings(self) -> list[dict[str, Any]]:
        return [r for b in self.bodies("telemetry") for r in b["readings"]]

    def ledger(self) -> dict[str, dict[str, Any]]:
        """Ledger entries received, by id (a repeated delivery counts once)."""
        return {e["id"]: e for b in self.bodies("ledger") for e in b["entries"]}

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [b for b in self.bodies("events") if kind is None or b["type"] == kind]

    def seq_report(self) -> dict[str, Any]:
        """Gaps and duplicates in the seq of everything but the retained status."""
        with self._cond:
            seen = sorted(self.seqs)
        duplicates = sorted({s for s in seen if seen.count(s) > 1}) if seen else []
        unique = sorted(set(seen))
        gaps = [s for s in range(unique[0], unique[-1] + 1) if s not in set(unique)] \
            if unique else []
        return {"received": len(seen), "unique": len(unique), "duplicates": duplicates,
                "gaps": gaps}

    # -- commands -------------------------------------------------------------------------
    def envelope(self, kind: str, args: dict[str, Any], *, cmd_id: str | None = None,
                 gw: str | None = None, issued: datetime | None = None,
                 ttl: timedelta = timedelta(minutes=10), sign_with: Any = None,
                 kid: str | None = None) -> dict[str, Any]:
        return envelope(kind, args, gw or self.gateway, sign_with or self.key,
                        kid or self.kid, cmd_id=cmd_id, issued=issued, ttl=ttl)

    def send_raw(self, payload: bytes | str) -> None:
        self.client.publish(f"{self.base}/cmd", payload, qos=1).wait_for_publish(10)

    def send(self, kind: str, args: dict[str, Any], **kw: Any) -> str:
        envelope = self.envelope(kind, args, **kw)
        self.send_raw(json.dumps(envelope))
        return envelope["cmd"]["id"]

    def result(self, cmd_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [b for t, b in self.messages if t == "cmd/result"
                        and b["cmd_id"] == cmd_id]
            return bool(found)

        self.wait_for(arrived, timeout)
        return found[0] if found else None

    def call(self, kind: str, args: dict[str, Any], timeout: float = 30.0,
             **kw: Any) -> dict[str, Any] | None:
        return self.result(self.send(kind, args, **kw), timeout)
