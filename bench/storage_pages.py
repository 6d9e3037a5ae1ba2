"""Which pages one poll cycle writes, as the database ages: a diagnostic beside storage.py.

Run: python3 bench/storage_pages.py --meters 128 --days 40,100,365

Runs `bench/storage.py`'s simulation and, at cycle 50 of each chosen day, checkpoints the WAL,
runs the cycle with checkpoints off, and prints its WAL frames by table (`dbstat`), the
pointer-map pages (`auto_vacuum`: one every 820 pages from page 2) among them, and what the
pointer-map entries that changed now point at.  This is how docs/storage.md found that the
pointer map's share grows as the free list mixes (issue 12).
"""

from __future__ import annotations

import argparse
import collections
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import storage as bench

PAGE = 4096
PTRMAP_EVERY = PAGE // 5 + 1  # a pointer-map page, then the 819 pages it maps


def _is_ptrmap(page: int) -> bool:
    return page >= 2 and (page - 2) % PTRMAP_EVERY == 0


def _kind(owner: dict[int, str], page: int) -> str:
    name = owner.get(page, "free/trunk")
    if name.startswith("readings_d"):
        return "readings_dN"
    if name.startswith("ledger_d") and name != "ledger_days":
        return "ledger_dN"
    return name


def _report(store: Any, day: int, meters: int, before: bytes) -> None:
    conn = store.conn
    wal = Path(f"{store.path}-wal").read_bytes()
    frames: dict[int, bytes] = {}
    for off in range(32, len(wal) - 23, 24 + PAGE):
        frames[struct.unpack(">I", wal[off:off + 4])[0]] = wal[off + 24:off + 24 + PAGE]
    owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    kinds = collections.Counter(
        "ptrmap" if _is_ptrmap(p) else _kind(owner, p) for p in frames)
    changed: collections.Counter[str] = collections.Counter()
    for page, data in frames.items():
        if _is_ptrmap(page):
            old = before[(page - 1) * PAGE:page * PAGE]
            changed.update(_kind(owner, page + 1 + i) for i in range(PAGE // 5)
                           if old[i * 5:i * 5 + 5] != data[i * 5:i * 5 + 5])
    print(f"day {day}: {len(frames)} pages ({len(frames) * PAGE / meters:,.0f} B/reading), "
          f"file {conn.execute('PRAGMA page_count').fetchone()[0]} pages, free "
          f"{conn.execute('PRAGMA freelist_count').fetchone()[0]}: "
          + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
          + "; pointer-map entries changed for: " + (", ".join(
              f"{k} {v}" for k, v in changed.most_common()) or "none"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=128)
    parser.add_argument("--days", default="40,100,365", help="days to look at, comma-separated")
    parser.add_argument("--report", type=int, default=100000,
                        help="also print storage.py's figures every N days")
    parser.add_argument("--phases", action="store_true", help="and by phase (storage.py)")
    args = parser.parse_args()
    days = {int(d) for d in args.days.split(",")}
    process = bench.Processor.process
    cycles = [0]

    def looked_at(self: Any, polls: Any, ts: Any) -> Any:
        cycles[0] += 1
        day, cycle = divmod(cycles[0] - 1, 96)
        if day + 1 not in days or cycle != 50:
            return process(self, polls, ts)
        conn = self.store.conn
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = Path(self.store.path).read_bytes()
        try:
            return process(self, polls, ts)
        finally:
            _report(self.store, day + 1, args.meters, before)
            conn.execute("PRAGMA wal_autocheckpoint="
                         f"{0 if args.phases else bench.WAL_AUTOCHECKPOINT_PAGES}")

    bench.Processor.process = looked_at  # type: ignore[method-assign]
    sys.argv = [sys.argv[0], "--meters", str(args.meters), "--days", str(max(days)),
                "--report", str(args.report)] + (["--phases"] if args.phases else [])
    bench.main()


if __name__ == "__main__":
    main()
