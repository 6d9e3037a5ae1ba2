"""How long a week-long backlog takes to drain to a local broker after reconnecting.

Run: python3 bench/drain.py [--meters 1024] [--days 7]

Builds the outbox of a gateway that could not reach its head end for DAYS: 15-minute energy
readings of METERS meters (7 x 96 x 1,024 = 688,128 readings), stored and queued exactly as the
daemon does (readings table + outbox references, 500 readings per message).  Then starts a
local Mosquitto and the agent's own `HeadEndLink`, and a subscriber that counts what arrives;
the figure is the time from starting the link until the outbox is empty and every reading has
been received.  Needs `mosquitto` on PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import MqttConfig, RetentionConfig
from edge_agent.headend.mqtt_link import HeadEndLink
from edge_agent.store import Store


def build_backlog(store: Store, meters: int, days: int) -> int:
    start = datetime(2026, 11, 15, tzinfo=UTC)
    addresses = [f"{n:012d}" for n in range(1, meters + 1)]
    cycles = days * 96
    for day in range(days):
        with store.transaction():
            for q in range(96):
                ts = start + timedelta(minutes=15 * (day * 96 + q))
                kwh = f"{100 + (day * 96 + q) * 0.25:.2f}"
                written = store.record_readings((a, ts, "forward_active_total", kwh)
                                                for a in addresses)
                assert written is not None
                store.enqueue_range("telemetry", *written)
    return cycles * meters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1024)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        sys.exit("bench/drain.py needs mosquitto (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory(prefix="edge-agent-drain-", dir="/var/tmp") as tmp:
        store = Store(Path(tmp) / "drain.db")
        began = time.perf_counter()
        readings = build_backlog(store, args.meters, args.days)
        messages = sum(store.outbox_depth().values())
        print(f"backlog: {readings:,} readings of {args.meters} meters over {args.days} days in "
              f"{messages:,} messages (built in {time.perf_counter() - began:.1f} s)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                        f"max_queued_messages 1000000\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        received = {"readings": 0, "messages": 0}
        done = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="drain-headend")

        def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
            body = json.loads(message.payload)
            received["messages"] += 1
            received["readings"] += len(body.get("readings", []))
            if received["readings"] >= readings:
                done.set()

        sub.on_message = on_message
        sub.on_connect = lambda c, *a: c.subscribe("edge/bench/telemetry", qos=1)
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        time.sleep(0.3)
        link = HeadEndLink(MqttConfig(enabled=True, urls=(f"mqtt://127.0.0.1:{port}",),
                                      status_interval=3600), "bench", store,
                           lambda: {}, RetentionConfig())
        try:
            started = time.perf_counter()
            link.start()
            done.wait(600)
            while store.outbox_depth() and time.perf_counter() - started < 600:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            link.stop()
            sub.loop_stop()
            broker.terminate()
            broker.wait(10)
        print(f"drain to a local broker after reconnect: {elapsed:.1f} s (target < 60 s)")
        print(f"  messages/s sustained  {messages / elapsed:,.0f}  ({received['messages']:,} "
              f"received)")
        print(f"  readings/s sustained  {readings / elapsed:,.0f}  ({received['readings']:,} "
              f"received)")


if __name__ == "__main__":
    main()
