"""A fleet of gateways against one broker, and head-end consumers sharing the load.

Run: python3 bench/fleet.py [--gateways 200] [--seconds 30] [--interval 1.0]

Starts a local Mosquitto on a free loopback port, then in this one process:

- GATEWAYS gateway-shaped MQTT 5 clients (client id `edge-agent-<gw>`, persistent session,
  retained status and last will, QoS 1).  Each one's 15-minute cycle is compressed into
  INTERVAL seconds: per cycle one telemetry batch (METERS meters x 9 readings), one ledger
  batch (a charge entry per meter), an event with probability EVENT_RATE, the retained status
  every 4th cycle; a small share of messages is sent twice with the same `seq`, as a
  reconnecting gateway re-sends what was not acknowledged.  Gateways are spread evenly over the
  interval, as real ones drift apart.  Payloads have the shape of docs/schemas (a sample is
  validated when `jsonschema` is installed).
- two head-end consumers with MQTT 5 shared subscriptions (`$share/headend/edge/+/telemetry`,
  `.../events`, `.../ledger`): the broker gives each message to ONE of them.  Each message is
  pushed through a reorder buffer keyed by gateway, which releases a gateway's messages in
  `seq` order and drops repeated `seq`s; at the end every gateway must be gapless and complete.

The gateways are not `edge_agent.headend.mqtt_link.HeadEndLink`s: that class owns a thread that
polls its
client every 20 ms and a SQLite outbox, so 200 of them in one process on 2 cores would measure
the Python scheduler, not the broker.  These publishers share one selector loop (paho's
external-loop API) and keep the link's wire behaviour: one `seq` per gateway across topics,
QoS 1, retained status with the high-water `seq`, the same last will, MQTT 5 session expiry.

Broker-side figures come from Mosquitto's own `$SYS` counters (publish messages and bytes
received and sent), read before and after the measured window.  Needs `mosquitto` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from localbroker import start_mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DOCS = Path(__file__).resolve().parents[1] / "docs"
NAMES = ("forward_active_total", "forward_active_rate1", "forward_active_rate2",
         "forward_active_rate3", "forward_active_rate4", "voltage_a", "current_a",
         "active_power_total", "status_word_3")
DATA_TOPICS = ("telemetry", "events", "ledger")
SESSION_EXPIRY = 7 * 24 * 3600
REAL_INTERVAL = 900  # seconds of a real gateway's cycle that one compressed interval stands for


# -- the broker ---------------------------------------------------------------------------
def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Mosquitto with $SYS every second and room for the fleet's queues."""
    return start_mosquitto(directory, "sys_interval 1\nmax_queued_messages 100000\n"
                                      "max_inflight_messages 100")


class SysCounters:
    """Mosquitto's $SYS publish and byte counters, as last published."""

    KEYS = ("publish/messages/received", "publish/messages/sent", "bytes/received",
            "bytes/sent", "clients/connected")

    def __init__(self, port: int) -> None:
        self.values: dict[str, int] = {}
        self.updated = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-sys")
        self.seen = 0  # $SYS messages we received: the broker counts them as sent too
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(f"$SYS/broker/{k}", 0) for k in self.KEYS])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.seen += 1
        key = msg.topic.removeprefix("$SYS/broker/")
        if key in self.KEYS:
            self.values[key] = int(msg.payload)
            self.updated.set()

    def snapshot(self) -> tuple[float, dict[str, int]]:
        """Counters fresh from the broker (waits for the next $SYS publication); the
        broker's count of sent publishes leaves out the $SYS ones sent to us."""
        self.updated.clear()
        self.updated.wait(3)
        time.sleep(0.05)  # the rest of the same $SYS burst
        values = dict(self.values)
        values["publish/messages/sent"] = values.get("publish/messages/sent", 0) - self.seen
        return time.monotonic(), values

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- gateways -----------------------------------------------------------------------------
def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Gateway:
    """What one gateway sends per cycle, shaped like docs/schemas."""

    gw: str
    meters: int
    client: mqtt.Client
    seq: int = 0
    cycle: int = 0
    kwh: list[int] = field(default_factory=list)
    balance: list[int] = field(default_factory=list)

    def body(self, topic: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.seq += 1
        return topic, {"v": 1, "gw": self.gw, "seq": self.seq, **payload}

    def cycle_messages(self, now: datetime, rng: random.Random,
                       event_rate: float) -> list[tuple[str, dict[str, Any]]]:
        self.cycle += 1
        ts = stamp(now)
        readings, entries = [], []
        for m in range(self.meters):
            meter = f"{m + 1:012d}"
            used = rng.randint(0, 60)  # 0.01 kWh
            self.kwh[m] += used
            kwh = f"{self.kwh[m] // 100}.{self.kwh[m] % 100:02d}"
            values = [kwh, kwh, "0.00", "0.00", "0.00", "229.8", "1.234", "0.2830", "0000"]
            readings += [{"meter": meter, "ts": ts, "name": n, "value": v}
                         for n, v in zip(NAMES, values, strict=True)]
            cost = used * 5600  # micro-yuan: 0.56 yuan/kWh x 0.01 kWh
            self.balance[m] -= cost
            entries.append({"id": f"{self.gw}:charge:{meter}:{self.cycle}", "account": f"A{m}",
                            "kind": "charge", "amount": micro(-cost), "ts": ts, "meter": meter,
                            "detail": {"kwh": f"0.{used:02d}"},
                            "balance_after": micro(self.balance[m])})
        out = [self.body("telemetry", {"readings": readings}),
               self.body("ledger", {"entries": entries})]
        if rng.random() < event_rate:
            out.append(self.body("events", {
                "ts": ts, "type": "meter_offline", "severity": "warning",
                "meter": f"{rng.randrange(self.meters) + 1:012d}", "account": None,
                "detail": {"error": "no reply"}}))
        return out

    def status(self, started: datetime, online: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"v": 1, "gw": self.gw, "seq": self.seq, "online": online}
        if online:
            body.update(version="0.1.0", started_at=stamp(started), cycles=self.cycle,
                        meters=self.meters, buses=[{"name": "bus1", "port": "/dev/ttyUSB0",
                                                    "protocol": "dlt645-2007"}])
        return body


def micro(value: int) -> str:
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def new_gateway_client(gw: str, port: int, will: dict[str, Any]) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{gw}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.will_set(f"edge/{gw}/status", json.dumps(will), qos=1, retain=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY
    client.connect("127.0.0.1", port, 60, clean_start=False, properties=props)
    return client


class Fleet:
    """Many gateway clients driven by one selector loop (paho's external-loop API)."""

    def __init__(self, count: int, meters: int, port: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.selector = selectors.DefaultSelector()
        self.gateways: list[Gateway] = []
        self.sent = 0
        self.sent_bytes = 0
        self.duplicates = 0
        for n in range(count):
            gw = f"gw-{n:05d}"
            client = new_gateway_client(gw, port, {"v": 1, "gw": gw, "seq": 0,
                                                   "online": False})
            self.gateways.append(Gateway(gw, meters, client, kwh=[100_000] * meters,
                                         balance=[50_000_000] * meters))
            self.selector.register(client.socket(), selectors.EVENT_READ, client)
        self.started = datetime.now(UTC)

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            key.data.loop_read()
        for g in self.gateways:
            if g.client.want_write():
                g.client.loop_write()

    def misc(self) -> None:
        for g in self.gateways:
            g.client.loop_misc()

    def publish(self, g: Gateway, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        payload = json.dumps(body, separators=(",", ":"))
        g.client.publish(f"edge/{g.gw}/{topic}", payload, qos=1, retain=retain)
        self.sent += 1
        self.sent_bytes += len(payload)

    def run_cycle(self, g: Gateway, now: datetime, event_rate: float, dup_rate: float) -> None:
        for topic, body in g.cycle_messages(now, self.rng, event_rate):
            self.publish(g, topic, body)
            if self.rng.random() < dup_rate:  # a redelivery after a reconnect: same seq
                self.publish(g, topic, body)
                self.duplicates += 1
        if g.cycle % 4 == 1:
            self.publish(g, "status", g.status(self.started), retain=True)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(0.05)
            if not any(g.client.want_write() for g in self.gateways):
                self.misc()
                if all(not g.client._out_messages for g in self.gateways):
                    return

    def close(self) -> None:
        for g in self.gateways:
            self.publish(g, "status", g.status(self.started, online=False), retain=True)
        self.drain(5)
        for g in self.gateways:
            g.client.disconnect()
        self.pump(0.2)


# -- head-end consumers -------------------------------------------------------------------
class Reorder:
    """Per-gateway reorder buffer: releases each gateway's messages in `seq` order, once.

    Both consumers of the shared subscription feed it, as a head end's consumers would feed
    a store keyed by (gw, seq).  The first seq seen of a gateway starts its sequence."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next: dict[str, int] = {}
        self.held: dict[str, dict[int, dict[str, Any]]] = {}
        self.released: dict[str, list[int]] = {}
        self.dropped = 0

    def push(self, body: dict[str, Any]) -> None:
        gw, seq = body["gw"], body["seq"]
        with self.lock:
            expected = self.next.setdefault(gw, 1)
            held = self.held.setdefault(gw, {})
            if seq < expected or seq in held:
                self.dropped += 1
                return
            held[seq] = body
            out = self.released.setdefault(gw, [])
            while expected in held:
                held.pop(expected)
                out.append(expected)
                expected += 1
            self.next[gw] = expected

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.released.values())


class Consumer:
    """One head-end consumer in the shared-subscription group `headend`."""

    def __init__(self, name: str, port: int, reorder: Reorder, validate: Any) -> None:
        self.name = name
        self.reorder = reorder
        self.validate = validate
        self.received = 0
        self.bytes = 0
        self.out_of_order = 0
        self.last: dict[str, int] = {}
        self.invalid: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"headend-{name}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 60, clean_start=True)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(f"$share/headend/edge/+/{t}", 1) for t in DATA_TOPICS])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        self.received += 1
        self.bytes += len(msg.payload)
        if body["seq"] <= self.last.get(body["gw"], 0) and body["seq"] != self.last[body["gw"]]:
            self.out_of_order += 1
        self.last[body["gw"]] = body["seq"]
        if self.validate and self.received % 97 == 1:
            problems = self.validate(msg.topic.rsplit("/", 1)[1], body)
            self.invalid += problems
        self.reorder.push(body)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def schema_validator() -> Any:
    """Validate sampled messages against docs/schemas, when jsonschema is installed."""
    try:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
    except ImportError:
        return None
    base = "https://edge-agent.invalid/schemas/"
    root = DOCS / "schemas"
    files = [p for p in root.rglob("*.json") if "examples" not in p.parts]
    registry = Registry().with_resources(
        (base + p.relative_to(root).as_posix(), Resource.from_contents(json.loads(p.read_text())))
        for p in files)
    validators = {t: Draft202012Validator(json.loads((root / f"{t}.json").read_text()),
                                          registry=registry) for t in DATA_TOPICS}
    return lambda topic, body: [e.message for e in validators[topic].iter_errors(body)]


# -- the run ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, port: int, broker_pid: int) -> dict[str, Any]:
    sys_counters = SysCounters(port)
    reorder = Reorder()
    validate = schema_validator()
    consumers = [Consumer(f"c{n}", port, reorder, validate) for n in (1, 2)]
    t0 = time.monotonic()
    fleet = Fleet(args.gateways, args.meters, port, args.seed)
    while not all(g.client.is_connected() for g in fleet.gateways):
        fleet.pump(0.05)
        if time.monotonic() - t0 > 30:
            raise SystemExit("error: the fleet did not connect within 30 s")
    connect_s = time.monotonic() - t0
    for g in fleet.gateways:
        fleet.publish(g, "status", g.status(fleet.started), retain=True)
    fleet.drain(5)
    start, before = sys_counters.snapshot()
    cpu_start = cpu_seconds(broker_pid), time.process_time()
    sent0, bytes0 = fleet.sent, fleet.sent_bytes
    sim_time = datetime(2026, 11, 22, tzinfo=UTC)
    slots = len(fleet.gateways)
    begin = time.monotonic()
    for cycle in range(args.cycles):
        for slot, g in enumerate(fleet.gateways):
            due = begin + (cycle + slot / slots) * args.interval
            while time.monotonic() < due:
                fleet.pump(max(0.0, min(0.01, due - time.monotonic())))
            fleet.run_cycle(g, sim_time + timedelta(seconds=REAL_INTERVAL * cycle),
                            args.event_rate, args.duplicate_rate)
            if slot % 50 == 0:
                fleet.misc()
    fleet.drain(10)
    publish_s = time.monotonic() - begin
    end, after = sys_counters.snapshot()
    cpu_end = cpu_seconds(broker_pid), time.process_time()
    expected = sum(g.seq for g in fleet.gateways)
    deadline = time.monotonic() + 15
    while reorder.count() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    window = end - start
    data_sent = fleet.sent - sent0
    fleet.close()
    for c in consumers:
        c.stop()
    sys_counters.stop()
    gapless = all(reorder.released.get(g.gw, []) == list(range(1, g.seq + 1))
                  for g in fleet.gateways)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in SysCounters.KEYS}
    per_gw_msgs = data_sent / args.gateways / args.cycles
    return {
        "gateways": args.gateways, "meters_per_gateway": args.meters, "cycles": args.cycles,
        "interval_s": args.interval, "connect_s": round(connect_s, 2),
        "publish_window_s": round(publish_s, 2), "sys_window_s": round(window, 2),
        "clients_connected": after.get("clients/connected"),
        "gateway_publishes": data_sent, "redeliveries_injected": fleet.duplicates,
        "avg_payload_bytes": round((fleet.sent_bytes - bytes0) / max(data_sent, 1)),
        "broker_publish_in_per_s": round(delta["publish/messages/received"] / window, 1),
        "broker_publish_out_per_s": round(delta["publish/messages/sent"] / window, 1),
        "broker_bytes_in_per_s": round(delta["bytes/received"] / window),
        "broker_bytes_out_per_s": round(delta["bytes/sent"] / window),
        "broker_cpu_share": round((cpu_end[0] - cpu_start[0]) / window, 3),
        "bench_process_cpu_share": round((cpu_end[1] - cpu_start[1]) / window, 3),
        "per_gateway_msgs_per_cycle": round(per_gw_msgs, 3),
        "per_gateway_msgs_per_s_compressed": round(per_gw_msgs / args.interval, 3),
        "per_gateway_msgs_per_hour_real": round(per_gw_msgs * 3600 / REAL_INTERVAL, 2),
        "consumer_share": [c.received for c in consumers],
        "consumer_out_of_order": [c.out_of_order for c in consumers],
        "released_in_order": reorder.count(), "expected": expected,
        "duplicates_dropped": reorder.dropped, "gapless_every_gateway": gapless,
        "schema_checked": validate is not None,
        "schema_problems": sorted({p for c in consumers for p in c.invalid})[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--meters", type=int, default=8, help="meters per gateway")
    parser.add_argument("--seconds", type=float, default=30.0, help="publishing time")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds that stand for one 15-minute cycle")
    parser.add_argument("--event-rate", type=float, default=0.1)
    parser.add_argument("--duplicate-rate", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.cycles = max(1, int(args.seconds / args.interval))
    if shutil.which("mosquitto") is None:
        raise SystemExit("error: mosquitto is not installed")
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        proc, port = start_broker(Path(tmp))
        try:
            result = run(args, port, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36} {value}")
    ok = result["gapless_every_gateway"] and not result["schema_problems"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
