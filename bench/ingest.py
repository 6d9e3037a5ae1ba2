"""Readings per second through store + bill + enforce, bytes written per reading, and the
daemon's resident memory with 2,048 meters registered.

Run: python3 bench/ingest.py [--meters 2048] [--cycles 10] [--memory-only]

Throughput is measured in this process, pinned to one core, calling the daemon's own
`Processor.process` with one poll cycle of all meters at a time (one transaction per cycle,
as the daemon does), a flat tariff, funded accounts and the default policy.  Memory is the
VmRSS of a real `edge-agent run` with 2,048 meters on 8 simulated buses, after start-up and
its first polls, twice: MQTT link off, then on (`[mqtt] enabled` against a local mosquitto,
with the head end sending signed commands, a top-up, a read and a ping, that the daemon
verifies and answers while it is sampled).  The daemon runs with the `Environment=` of
systemd/edge-agent.service, as on a gateway.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from localbroker import start_mosquitto  # noqa: E402  (bench/ is on the path)

from edge_agent.prepaid.policy import Policy  # noqa: E402
from edge_agent.prepaid.processor import Processor  # noqa: E402
from edge_agent.prepaid.records import (  # noqa: E402
    LedgerEntry,
    Poll,
    RegisterReading,
)
from edge_agent.prepaid.tariff import load_tariff  # noqa: E402
from edge_agent.store import MeterRecord, Store  # noqa: E402


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def bench_throughput(meters: int, cycles: int, tmp: Path,
                     durable: bool = True) -> dict[str, float]:
    from zoneinfo import ZoneInfo

    name = "ingest.db" if durable else "ingest-nosync.db"
    store = Store(tmp / name)
    if not durable:  # isolates the CPU cost: commits are not synced to the device
        store.conn.execute("PRAGMA synchronous=OFF")
    start = datetime(2026, 11, 22, tzinfo=UTC)
    addresses = [f"{n:012d}" for n in range(1, meters + 1)]
    with store.transaction():
        for n, address in enumerate(addresses, start=1):
            store.add_meter(MeterRecord(address, f"bus{n % 8}", f"A{n}", "flat"),
                            Decimal("100.00"), start)
    tariff = load_tariff(ROOT / "config" / "tariffs" / "flat.toml")
    proc = Processor(store, {"flat": tariff}, Policy(), ZoneInfo("Asia/Shanghai"), "gw1")
    proc.apply_entries([LedgerEntry(f"open-{a}", f"A{n}", "opening", Decimal("100000"), start)
                        for n, a in enumerate(addresses, start=1)], start)
    db_files = [tmp / name, tmp / f"{name}-wal"]
    size_before = sum(f.stat().st_size for f in db_files if f.exists())
    written_before = wchar()
    elapsed = 0.0
    for cycle in range(1, cycles + 1):
        ts = start + timedelta(minutes=15 * cycle)
        kwh = str(Decimal("100.00") + Decimal(cycle) * Decimal("0.25"))
        polls = [Poll(a, ts, True, RegisterReading(a, ts, Decimal(kwh)),
                      [("forward_active_total", kwh)]) for a in addresses]
        began = time.perf_counter()
        proc.process(polls, ts)
        elapsed += time.perf_counter() - began
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    written = wchar() - written_before
    size_after = sum(f.stat().st_size for f in db_files if f.exists())
    readings = meters * cycles
    store.close()
    return {"readings": readings, "seconds": elapsed, "per_second": readings / elapsed,
            "written_per_reading": written / readings,
            "growth_per_reading": (size_after - size_before) / readings}


def memory_config(meters: int, tmp: Path, sims: list[Any], mqtt_port: int | None,
                  poll_interval: float = 3600) -> Path:
    """The bench's agent.toml: `meters` on 8 buses (one per simulator), the link optional."""
    lines = [f'[agent]\ngateway_id = "bench"\ndatabase = "{tmp / "mem.db"}"\n'
             f'tariff_dir = "{ROOT / "config" / "tariffs"}"\n'
             f'control_socket = "{tmp / "control.sock"}"\n']
    for b, sim in enumerate(sims):
        lines.append(f'[[bus]]\nname = "bus{b}"\nport = "{sim.port}"\nbaud = 9600\n'
                     f'response_timeout = 0.2\ngap = 0.0\npoll_interval = {poll_interval}\n')
    for b, sim in enumerate(sims):
        for m in sim.meters:
            lines.append(f'[[meter]]\naddress = "{m.address}"\nbus = "bus{b}"\n'
                         f'account = "A{m.address}"\ntariff = "flat"\ninitial_kwh = "0"\n')
    if mqtt_port is not None:  # the head-end link on, against a local broker
        from tests.helpers import mqtt_extra

        lines.append(mqtt_extra(tmp, mqtt_port, status_interval=10.0))
    config = tmp / "mem.toml"
    config.write_text("\n".join(lines))
    return config


def unit_environment() -> dict[str, str]:
    """The `Environment=` assignments of systemd/edge-agent.service (the daemon runs with
    them here as it does on a gateway), without the configuration path."""
    env = {}
    for line in (ROOT / "systemd" / "edge-agent.service").read_text().splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                key, _, value = item.partition("=")
                env[key] = value
    env.pop("EDGE_AGENT_CONFIG", None)
    return env


# Signed head-end commands sent while the memory is sampled (MQTT on): at these seconds
# after the start, each verified by the daemon with the head end's Ed25519 key and answered.
COMMANDS_AT = {5: ("topup", {"amount": "50.00", "txn_id": "bench-pay-1"}),
               15: ("read", {"quantities": ["energy"]}),
               25: ("ping", {})}


def bench_memory(meters: int, tmp: Path, mqtt: bool = False, seconds: int = 30,
                 poll_interval: float = 3600) -> dict[str, Any]:
    from firmware_sim.bus import SimBus, make_meters

    per_bus = meters // 8
    sims = [SimBus(make_meters(per_bus, first=1 + b * per_bus), baud=9600).start()
            for b in range(8)]
    broker = head = None
    port = None
    if mqtt:
        broker, port = start_mosquitto(tmp, "max_queued_messages 1000000")
    config = memory_config(meters, tmp, sims, port, poll_interval)
    env = {**os.environ, **unit_environment()}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config),
                             "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    samples = []
    results: list[str] = []
    pending: list[tuple[str, str]] = []
    try:
        if mqtt:
            from firmware_sim.headend import HeadEnd

            head = HeadEnd("127.0.0.1", port, "bench", tmp / "keys" / "headend-1.key").start()
        first = sims[0].meters[0].address
        for second in range(1, seconds + 1):
            time.sleep(1)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:"))
            samples.append(rss)
            if head is not None and second in COMMANDS_AT:
                kind, args = COMMANDS_AT[second]
                target = {"account": f"A{first}"} if kind == "topup" else \
                    {"meter": first} if kind == "read" else {}
                pending.append((kind, head.send(kind, {**target, **args})))
        for kind, cmd_id in pending:  # answered while sampling; waiting adds no samples
            answer = head.result(cmd_id, timeout=30) if head else None
            results.append(f"{kind} {answer['status'] if answer else 'no answer'}")
    finally:
        proc.terminate()
        proc.wait(30)
        polled = sum(s.requests_seen for s in sims)
        for sim in sims:
            sim.stop()
        if head is not None:
            head.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    return {"rss_mb": max(samples) / 1024, "requests_answered": polled, "commands": results,
            "environment": unit_environment()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2048)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode (median)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--seconds", type=int, default=30, help="memory: seconds sampled")
    parser.add_argument("--poll-interval", type=float, default=3600,
                        help="memory: each bus's poll interval (3600: one cycle, the "
                        "baseline readings; 10: cycles that bill, so ledger messages flow)")
    parser.add_argument("--mqtt-only", action="store_true", help="memory: the link on only")
    parser.add_argument("--only", choices=["durable", "nosync"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:  # one measurement in a fresh process, printed as a line of numbers
        with tempfile.TemporaryDirectory(prefix="edge-agent-bench-", dir="/var/tmp") as tmp:
            os.sched_setaffinity(0, {0})
            t = bench_throughput(args.meters, args.cycles, Path(tmp), args.only == "durable")
        print(t["per_second"], t["written_per_reading"], t["growth_per_reading"])
        return
    if not args.memory_only:
        throughput(args)
    if not args.skip_memory:
        memory(args)


def memory(args: argparse.Namespace) -> None:
    env = " ".join(f"{k}={v}" for k, v in unit_environment().items()) or "none"
    for mqtt in (True,) if args.mqtt_only else (False, True):
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="edge-agent-bench-", dir="/var/tmp") as tmp:
                runs.append(bench_memory(args.meters, Path(tmp), mqtt, args.seconds,
                                         args.poll_interval))
        rss = [m["rss_mb"] for m in runs]
        print(f"memory: edge-agent run with {args.meters} meters registered on 8 simulated "
              f"buses, MQTT link {'on (local mosquitto)' if mqtt else 'off'}, the unit's "
              f"environment ({env}), polls every {args.poll_interval:g} s, median of "
              f"{args.repeat} fresh daemons")
        print(f"  resident memory (max VmRSS over {args.seconds} s)  "
              f"{statistics.median(rss):.1f} MB  "
              f"[{', '.join(f'{r:.1f}' for r in rss)}]  (target <= 60 MB; "
              f"{runs[-1]['requests_answered']} requests answered meanwhile)")
        if mqtt:
            print(f"  signed head-end commands verified and answered: "
                  f"{'; '.join(', '.join(m['commands']) for m in runs)}")


def throughput(args: argparse.Namespace) -> None:
    results: dict[str, list[list[float]]] = {"durable": [], "nosync": []}
    for _ in range(args.repeat):
        for mode in results:
            out = subprocess.run([sys.executable, __file__, "--only", mode, "--meters",
                                  str(args.meters), "--cycles", str(args.cycles)],
                                 capture_output=True, text=True, check=True).stdout
            results[mode].append([float(x) for x in out.split()])

    def median(mode: str, index: int) -> float:
        return statistics.median(r[index] for r in results[mode])

    def spread(mode: str) -> str:
        return ", ".join(f"{r[0]:,.0f}" for r in results[mode])

    print(f"ingest: {args.meters} meters x {args.cycles} cycles = {args.meters * args.cycles} "
          f"readings through store + bill + enforce, one core, one transaction per cycle "
          f"(median of {args.repeat} fresh processes)")
    print(f"  readings/s, durable (synchronous=FULL, as deployed)  {median('durable', 0):,.0f}"
          f"  [{spread('durable')}]")
    print(f"  readings/s, commits not synced (CPU cost only)      {median('nosync', 0):,.0f}"
          f"  [{spread('nosync')}]  (target >= 20,000)")
    print(f"  bytes written/reading  {median('durable', 1):,.0f}  "
          f"(write syscalls incl. WAL and checkpoint)")
    print(f"  database growth/reading {median('durable', 2):,.0f} bytes "
          f"(reading, ledger entry, outbox reference, state)")


if __name__ == "__main__":
    main()
