"""Start-up time of `edge-agent --help` and `edge-agent status` (issue 12 target: <= 0.10 s).

Each command runs several times as a fresh process; the best time is printed (the others
measure the machine's load, not the program), with bytecode cached as on an installed
gateway.  `status` reads a small scratch database.

    python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_of(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return min(times)


def scratch_gateway(folder: Path) -> Path:
    """A configuration (one bus, 32 meters) and its database, as on a gateway."""
    sys.path.insert(0, str(ROOT))
    from edge_agent.store import MeterRecord, Store

    store = Store(folder / "agent.db")
    meters = [f"{n:012d}" for n in range(1, 33)]
    for n, meter in enumerate(meters, start=1):
        store.add_meter(MeterRecord(meter, "bus1", f"A{n}", "flat"), Decimal("1"),
                        datetime.now(UTC))
    store.close()
    config = folder / "agent.toml"
    config.write_text(
        f'[agent]\ndatabase = "{folder / "agent.db"}"\n'
        f'tariff_dir = "{ROOT / "config" / "tariffs"}"\n\n'
        '[[bus]]\nname = "bus1"\nport = "/dev/ttyUSB0"\n'
        'quantities = ["voltage_a", "current_a"]\n\n'
        + "".join(f'[[meter]]\naddress = "{m}"\nbus = "bus1"\naccount = "A{n}"\n'
                  'tariff = "flat"\n\n' for n, m in enumerate(meters, start=1)))
    return config


def measure(runs: int = 7) -> dict[str, float]:
    """Best of `runs` fresh processes each.  With bytecode, as on a gateway (pip compiles
    every module at install): the first run writes it into a scratch cache, whatever
    PYTHONDONTWRITEBYTECODE says in the caller's environment."""
    with tempfile.TemporaryDirectory() as name:
        config = scratch_gateway(Path(name))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_AGENT_CONFIG": str(config),
               "PYTHONPYCACHEPREFIX": str(Path(name) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        exe = [sys.executable, "-m", "edge_agent"]
        return {"python": best_of([sys.executable, "-c", "pass"], runs, env),
                "help": best_of([*exe, "--help"], runs, env),
                "status": best_of([*exe, "status"], runs, env)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    figures = measure(parser.parse_args().runs)
    print(f"python -c pass        {figures['python']:.3f} s")
    print(f"edge-agent --help     {figures['help']:.3f} s")
    print(f"edge-agent status     {figures['status']:.3f} s  (agent.toml, 32 meters)")


if __name__ == "__main__":
    main()
