"""A year of a gateway's storage in compressed time: database size and bytes written per reading.

Run: python3 bench/storage.py [--meters 1024] [--days 365] [--values 10]

1,024 meters polled every 15 minutes (simulated clock, as fast as the machine goes) through the
daemon's own `Processor.process` (store + bill + enforce, one transaction per cycle, as deployed:
WAL, synchronous=FULL), each poll storing the values a DL/T 645-2007 meter gives with the default
quantities (total and 4 rates, status word 3, voltage, current, power, cover count: 10).  The
head end acknowledges every message each simulated hour; retention (`[retention]` defaults)
runs every cycle, as the daemon runs it every 10 minutes.  Printed every `--report` days and at
the end: database size (file + WAL) and bytes written per reading (one meter's poll), from
/proc/self/io (`wchar`: what SQLite handed to the kernel, WAL and checkpoints included;
`write_bytes`: what reached the block device).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.config import RetentionConfig  # noqa: E402
from edge_agent.prepaid.policy import Policy  # noqa: E402
from edge_agent.prepaid.processor import Processor  # noqa: E402
from edge_agent.prepaid.records import LedgerEntry, Poll, RegisterReading  # noqa: E402
from edge_agent.prepaid.tariff import load_tariff  # noqa: E402
from edge_agent.store import MeterRecord, Store  # noqa: E402
from edge_agent.store.database import WAL_AUTOCHECKPOINT_PAGES  # noqa: E402

QUANTITIES = ("forward_active_total", "forward_active_rate1", "forward_active_rate2",
              "forward_active_rate3", "forward_active_rate4", "status_word_3", "voltage_a",
              "current_a", "active_power_total", "cover_open_count")
MiB = 1024 * 1024


def io_counters() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def poll(address: str, ts: datetime, kwh: Decimal, values: int) -> Poll:
    text = f"{kwh:.2f}"
    quarter = f"{kwh / 4:.2f}"
    all_values = [("forward_active_total", text)] + [
        (f"forward_active_rate{n}", quarter) for n in range(1, 5)] + [
        ("status_word_3", "0000"), ("voltage_a", "220.1"), ("current_a", "4.512"),
        ("active_power_total", "0.9931"), ("cover_open_count", "0")]
    return Poll(address, ts, True, RegisterReading(address, ts, kwh), all_values[:values])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1024)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--values", type=int, default=len(QUANTITIES),
                        help="values stored per poll (1: the energy total only)")
    parser.add_argument("--report", type=int, default=30, help="print every N simulated days")
    parser.add_argument("--dir", default="/var/tmp", help="where the database is made")
    parser.add_argument("--readings-days", type=int, help="override [retention] readings_days "
                        "(with the two below: reach steady state sooner when iterating)")
    parser.add_argument("--daily-days", type=int, help="override [retention] daily_days")
    parser.add_argument("--ledger-detail-days", type=int,
                        help="override [retention] ledger_detail_days")
    parser.add_argument("--phases", action="store_true",
                        help="also print the bytes written per reading by each phase (poll "
                             "cycle, acknowledgement, retention, checkpoint: the WAL is "
                             "checkpointed by the bench at the same size SQLite would)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-agent-storage-", dir=args.dir) as tmp:
        run(args, Path(tmp) / "agent.db")


def run(args: argparse.Namespace, path: Path) -> None:
    store = Store(path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    addresses = [f"{n:012d}" for n in range(1, args.meters + 1)]
    with store.transaction():
        for n, address in enumerate(addresses, start=1):
            store.add_meter(MeterRecord(address, f"bus{n % 8}", f"A{n}", "flat"),
                            Decimal("0"), start)
    tariff = load_tariff(ROOT / "config" / "tariffs" / "flat.toml")
    proc = Processor(store, {"flat": tariff}, Policy(), ZoneInfo("Asia/Shanghai"), "gw1")
    proc.apply_entries([LedgerEntry(f"open-{a}", f"A{n}", "opening", Decimal("1000000"), start)
                        for n, a in enumerate(addresses, start=1)], start)
    overrides = {key: value for key, value in (
        ("readings_days", args.readings_days), ("daily_days", args.daily_days),
        ("ledger_detail_days", args.ledger_detail_days)) if value is not None}
    policy = dataclasses.replace(RetentionConfig(), **overrides)
    phases = dict.fromkeys(("cycle", "ack", "retention", "checkpoint"), 0)
    if args.phases:  # checkpoints by hand, so that each phase's WAL frames are its own
        store.conn.execute("PRAGMA wal_autocheckpoint=0")
    wal = Path(f"{path}-wal")

    def timed(phase: str, work: Any) -> None:
        before = io_counters()[0]
        work()
        phases[phase] += io_counters()[0] - before
        if args.phases and wal.exists() and wal.stat().st_size >= WAL_AUTOCHECKPOINT_PAGES * 4096:
            before = io_counters()[0]  # (TRUNCATE: the WAL's size says when it is full)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            phases["checkpoint"] += io_counters()[0] - before
    print(f"storage: {args.meters} meters, 15-minute polls, {args.values} values a poll, "
          f"{args.days} simulated days, retention {policy}", flush=True)
    print(f"{'day':>5} {'db MiB':>8} {'readings':>10} {'ledger':>9} {'B written/reading':>18} "
          f"{'B to disk/reading':>18} {'s/day':>6}", flush=True)
    cycles_a_day = 96
    wchar0, disk0 = io_counters()
    window = (wchar0, disk0, 0, time.monotonic())
    polls_done = 0
    peak = 0
    for day in range(1, args.days + 1):
        for cycle in range(cycles_a_day):
            ts = start + timedelta(days=day - 1, minutes=15 * cycle)
            kwh = Decimal(polls_done // args.meters + 1) * Decimal("0.25")
            polls = [poll(a, ts, kwh, args.values) for a in addresses]
            timed("cycle", lambda: proc.process(polls, ts))  # noqa: B023
            polls_done += args.meters
            if cycle % 4 == 3:  # the head end acknowledges what it was sent
                timed("ack", lambda: store.acknowledge(
                    [seq for seq, _, _ in store.pending(limit=1_000_000)]))
            timed("retention", lambda: store.apply_retention(policy, ts))  # noqa: B023
        peak = max(peak, size(path))
        if day % args.report == 0 or day == args.days:
            wchar, disk = io_counters()
            readings = polls_done - window[2]
            seconds = time.monotonic() - window[3]
            ledger = store.ledger_rows()
            rows = store.reading_rows()
            print(f"{day:>5} {size(path) / MiB:>8.1f} {rows:>10,} {ledger:>9,} "
                  f"{(wchar - window[0]) / readings:>18,.0f} "
                  f"{(disk - window[1]) / readings:>18,.0f} "
                  f"{seconds / args.report:>6.1f}", flush=True)
            if args.phases:
                print("      by phase (B/reading): " + ", ".join(
                    f"{k} {v / readings:,.0f}" for k, v in phases.items()), flush=True)
                phases = dict.fromkeys(phases, 0)
            window = (wchar, disk, polls_done, time.monotonic())
    for account in ("A1", f"A{args.meters}"):
        assert store.balance(account) == store.ledger_sum(account), account
    wchar, disk = io_counters()
    print(f"steady-state database size {size(path) / MiB:,.1f} MiB (peak {peak / MiB:,.1f} MiB; "
          f"target <= 1,024 MiB)")
    print(f"bytes written per reading over the run: {(wchar - wchar0) / polls_done:,.0f} "
          f"(syscalls), {(disk - disk0) / polls_done:,.0f} (to the device); target <= 1,024")
    print("balances equal ledger sums after compaction: yes")
    store.close()


if __name__ == "__main__":
    os.nice(5)
    main()
