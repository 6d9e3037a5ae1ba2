"""Two head-end consumers sharing the gateways' topics (MQTT 5 shared subscription).

With `$share/headend/edge/+/<topic>` the broker hands each message to ONE consumer of the
group, so neither sees a gateway's whole sequence.  What the head end can rely on (and what
docs/fleet.md builds on): every message reaches exactly one consumer, and merging both streams
and deduplicating by `(gw, seq)` gives every gateway's full, gapless sequence in order — here
including the repeats a reconnecting gateway sends.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

GATEWAYS = 6
MESSAGES = 150  # per gateway, over telemetry, ledger and events
TOPICS = ("telemetry", "ledger", "events")


class Consumer:
    def __init__(self, name: str, port: int) -> None:
        self.got: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"headend-{name}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(f"$share/headend/edge/+/{t}", 1) for t in TOPICS])
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30, clean_start=True)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        assert msg.topic == f"edge/{body['gw']}/{msg.topic.rsplit('/', 1)[1]}"
        with self.lock:
            self.got.append((body["gw"], body["seq"]))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def gateway(gw: str, port: int, repeats: set[int]) -> list[tuple[str, int]]:
    """Publish MESSAGES messages with seq 1..MESSAGES, the `repeats` twice (a redelivery);
    returns every (gw, seq) sent, repeats included."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{gw}",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    sent = []
    infos = []
    for seq in range(1, MESSAGES + 1):
        topic = TOPICS[seq % len(TOPICS)]
        body = json.dumps({"v": 1, "gw": gw, "seq": seq})
        for _ in range(2 if seq in repeats else 1):
            infos.append(client.publish(f"edge/{gw}/{topic}", body, qos=1))
            sent.append((gw, seq))
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    return sent


def merge(streams: list[list[tuple[str, int]]]) -> dict[str, list[int]]:
    """The head end's reorder buffer: per gateway, release seqs in order, each once."""
    by_gw: dict[str, set[int]] = {}
    for stream in streams:
        for gw, seq in stream:
            by_gw.setdefault(gw, set()).add(seq)
    return {gw: sorted(seqs) for gw, seqs in by_gw.items()}


@pytest.mark.slow
def test_each_message_reaches_one_consumer_and_merge_restores_order(broker: Any) -> None:
    consumers = [Consumer(name, broker.port) for name in ("c1", "c2")]
    try:
        assert all(c.subscribed.wait(10) for c in consumers)
        sent: list[tuple[str, int]] = []
        threads = []
        results: dict[str, list[tuple[str, int]]] = {}
        for n in range(GATEWAYS):
            gw = f"gw{n}"
            repeats = {s for s in range(1, MESSAGES + 1) if (s * (n + 3)) % 37 == 0}
            t = threading.Thread(target=lambda g=gw, r=repeats: results.__setitem__(
                g, gateway(g, broker.port, r)))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(60)
        sent = [m for r in results.values() for m in r]
        deadline = time.monotonic() + 20
        while sum(len(c.got) for c in consumers) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more may arrive: more than sent would be a double delivery
    finally:
        for c in consumers:
            c.stop()

    # Exactly one consumer per published message: the union of deliveries is what was sent.
    delivered = Counter(m for c in consumers for m in c.got)
    assert delivered == Counter(sent)
    # The group really shared the load (round robin in Mosquitto): neither consumer had it all.
    assert all(0 < len(c.got) < len(sent) for c in consumers)
    # Each consumer alone sees gaps; merged and deduplicated by (gw, seq) nothing is missing.
    assert any(sorted({s for g, s in c.got if g == "gw0"}) != list(range(1, MESSAGES + 1))
               for c in consumers)
    merged = merge([c.got for c in consumers])
    assert merged == {f"gw{n}": list(range(1, MESSAGES + 1)) for n in range(GATEWAYS)}
