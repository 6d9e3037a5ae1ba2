"""How long `edge-agent bill replay` takes over a year of readings, per example tariff.

Run: python3 bench/replay.py [--minutes 60] [--repeat 1]

For each `config/tariffs/*.toml`: one meter read every MINUTES for the year 2026 (hourly:
8,760 readings), 0.2-1.8 kWh an hour following a day curve, an opening balance large enough
that nothing trips; the figure is the wall time of the whole `edge-agent bill replay --json`
process (start-up, billing every interval with the daemon's Processor on a scratch SQLite
database, printing the timeline), the best of REPEAT runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readings(path: Path, minutes: int) -> int:
    """Write a year of readings of meter m1; return how many."""
    moment = datetime(2026, 1, 1)
    end = datetime(2027, 1, 1)
    kwh = 1000 * 100  # in 0.01 kWh
    count = 0
    with path.open("w") as out:
        while moment <= end:
            out.write(f"{moment:%Y-%m-%dT%H:%M},m1,{kwh // 100}.{kwh % 100:02d}\n")
            hour = moment.hour
            per_hour = 20 + 160 * (hour in (7, 8, 12, 18, 19, 20, 21)) + 40 * (hour >= 9)
            kwh += per_hour * minutes // 60
            moment += timedelta(minutes=minutes)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    agent = Path(sys.executable).parent / "edge-agent"
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "year.csv"
        rows = readings(csv, args.minutes)
        print(f"{rows} readings, one meter, every {args.minutes} min of 2026")
        print(f"{'tariff':<24} {'seconds':>8} {'readings/s':>11} {'timeline lines':>15}")
        for tariff in sorted((REPO / "config" / "tariffs").glob("*.toml")):
            best = float("inf")
            lines = 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                done = subprocess.run(
                    [str(agent), "bill", "replay", str(csv), "--tariff", str(tariff),
                     "--opening", "100000", "--json"], capture_output=True, text=True,
                    check=True)
                best = min(best, time.perf_counter() - started)
                lines = done.stdout.count("\n")
            print(f"{tariff.stem:<24} {best:>8.2f} {rows / best:>11,.0f} {lines:>15,}")


if __name__ == "__main__":
    main()
