"""Relay latency on a busy bus, as a head end sees it (issue 10).

Run: python3 bench/relay_latency.py [--meters 32] [--baud 2400] [--samples 4]

A Mosquitto broker, `edge-agent run` as a subprocess with N simulated DL/T 645 meters on one
pty at 2400 baud with wire timing, polling continuously with the default quantities, and the
head-end simulator signing commands.  Prints p50/p95/max (seconds) of:
- relay trip and relay close: signed `relay` command published -> its `cmd/result` arrives;
- top-up -> relay_closed: a signed `topup` for a tripped account published -> the
  `relay_closed` event of its meter arrives;
- the floor: wire time of the relay frame, its reply and one status-word read (request and
  reply) at this baud, the least any relay order can take.
The tripped accounts are prepared in the database before the daemon starts (phase tripped,
balance -1.00, meter relay open), so nothing waits for the policy to trip them first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.config import load_config  # noqa: E402
from edge_agent.prepaid.records import LedgerEntry  # noqa: E402
from edge_agent.runtime.daemon import Agent  # noqa: E402
from firmware_sim.bus import SimBus, make_meters  # noqa: E402
from firmware_sim.headend import HeadEnd  # noqa: E402
from protocols.dlt645 import catalogue, messages  # noqa: E402
from protocols.dlt645.frame import Control, Frame  # noqa: E402
from tests.conftest import Broker  # noqa: E402
from tests.helpers import agent_config, mqtt_extra  # noqa: E402

POLICY = """
alarm_grace_minutes = 0
relay_backoff_seconds = 0.2
"""


def floor(baud: int) -> float:
    """Wire time of relay request + reply + status word 3 read + reply (8E1: 11 bits)."""
    meter = "000000000001"
    relay = messages.relay_control(meter, messages.RelayAction.TRIP, timedelta(minutes=10))
    relay_reply = Frame(meter, Control(0x1C, reply=True), b"")
    item = catalogue.BY_NAME["status_word_3"]
    read = messages.read(meter, item)
    read_reply = Frame(meter, Control(0x11, reply=True), bytes(4 + item.size))
    size = sum(len(f.encode()) for f in (relay, relay_reply, read, read_reply))
    return size * 11 / baud


def summary(name: str, values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return f"{name:<26} no samples"
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (f"{name:<26} p50 {statistics.median(values):6.2f} s   p95 {p95:6.2f} s   "
            f"max {values[-1]:6.2f} s   (n={len(values)})")


def prepare(config_path: Path, tripped: list[str], funded: list[str]) -> None:
    """Register the meters, give accounts their opening balances, mark `tripped` tripped."""
    agent = Agent(load_config(config_path))
    try:
        meters = {m.address: m.account for m in agent.config.meters}
        entries = [LedgerEntry(f"open-{meters[m]}", meters[m], "opening", Decimal("-1.00"),
                               agent.clock.now()) for m in tripped]
        entries += [LedgerEntry(f"open-{meters[m]}", meters[m], "opening", Decimal("1000"),
                                agent.clock.now()) for m in funded]
        agent.apply_entries(entries)

        def trip_them() -> None:
            states = [replace(agent.processor.enforcement[m], phase="tripped") for m in tripped]
            with agent.store.transaction():
                agent.store.save_enforcement_states(states)

        agent.on_processor(trip_them)
    finally:
        agent.processing.shutdown(wait=True)
        agent.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=32)
    parser.add_argument("--baud", type=int, default=2400)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of polling before the first order")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker").start()
        sim = SimBus(make_meters(args.meters), baud=args.baud, wire_timing=True).start()
        addresses = [m.address for m in sim.meters]
        tripped = addresses[:args.samples]
        operated = addresses[args.samples:2 * args.samples]
        path = agent_config(tmp, sim.port, addresses, baud=args.baud, poll_interval=0.1,
                            policy=POLICY, extra=mqtt_extra(tmp, broker.port))
        text = path.read_text()
        text = text.replace('quantities = ["voltage_a", "cover_open_count"]\n', "")  # defaults
        text = text.replace("response_timeout = 0.1", "response_timeout = 0.5")
        path.write_text(text)
        prepare(path, tripped, addresses[args.samples:])
        for address in tripped:
            sim.meter(address).relay_open = True
            sim.meter(address).relay_cmd_open = True
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        daemon = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(path),
                                   "run"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / "daemon.log", "w"))
        head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp / "keys" / "headend-1.key").start()
        results: dict[str, list[float]] = {"trip": [], "close": [], "topup": []}
        try:
            if not head.wait_for(lambda: head.status is not None, timeout=30):
                raise SystemExit("the daemon never reported its status")
            time.sleep(args.warmup)
            for address in operated:
                for order in ("trip", "close"):
                    started = time.monotonic()
                    answer = head.call("relay", {"meter": address, "action": order},
                                       timeout=120)
                    elapsed = time.monotonic() - started
                    if not answer or answer.get("status") != "ok":
                        print(f"{order} {address}: {answer}", file=sys.stderr)
                        continue
                    results[order].append(elapsed)
                    time.sleep(0.5)
            for n, address in enumerate(tripped, 1):
                started = time.monotonic()
                head.send("topup", {"account": f"A{addresses.index(address) + 1}",
                                    "amount": "50.00", "txn_id": f"bench-{n}"})
                if head.wait_for(lambda a=address: any(
                        e.get("meter") == a for e in head.events("relay_closed")), timeout=120):
                    results["topup"].append(time.monotonic() - started)
                time.sleep(0.5)
            status = head.status or {}
        finally:
            head.stop()
            daemon.terminate()
            daemon.wait(30)
            sim.stop()
            broker.stop()
        print(f"relay latency: {args.meters} meters on one {args.baud}-baud bus, wire timing, "
              f"default quantities, continuous polling")
        print(summary("relay trip", results["trip"]))
        print(summary("relay close", results["close"]))
        print(summary("top-up -> relay_closed", results["topup"]))
        print(f"{'floor':<26} {floor(args.baud):.2f} s (relay frame + reply + status word read)")
        print(f"cycles stored during the run: {status.get('cycles')}")
        print(json.dumps({k: [round(v, 3) for v in vs] for k, vs in results.items()}))


if __name__ == "__main__":
    main()
