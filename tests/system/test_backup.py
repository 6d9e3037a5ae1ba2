"""`edge-agent backup PATH` copies the database while the real daemon polls and writes; a
failure is one `error:` line; the database files are private whatever the umask."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_backup_while_the_daemon_runs(tmp_path: Path) -> None:
    meters = [f"{n:012d}" for n in range(1, 4)]
    sim = SimBus(make_meters(3, load_kw=D("3600"), time_scale=1.0), baud=9600).start()
    config = agent_config(tmp_path, sim.port, meters, poll_interval=0.1, initial_kwh="0.00")
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(config)}
    daemon = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              preexec_fn=lambda: os.umask(0o022))  # a careless start
    db = tmp_path / "agent.db"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if db.exists() and _ledger_sum(sqlite3.connect(db), "COUNT(*)"):
                break
            time.sleep(0.2)
        copies = []
        for n in range(3):  # while charges keep being written
            done = _cli(env, "backup", str(tmp_path / f"copy{n}.db"))
            assert done.returncode == 0, done.stderr
            assert f"copy{n}.db" in done.stdout
            copies.append(tmp_path / f"copy{n}.db")
            time.sleep(0.3)
        assert daemon.poll() is None  # still running
        for suffix in ("", "-wal", "-shm"):
            assert Path(f"{db}{suffix}").stat().st_mode & 0o077 == 0, suffix
        counts = []
        for copy in copies:
            assert copy.stat().st_mode & 0o077 == 0
            conn = sqlite3.connect(copy)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # A consistent snapshot: every balance equals its ledger sum.
            for account, micro in conn.execute("SELECT id, balance_micro FROM accounts"):
                assert _ledger_sum(conn, "SUM(amount_micro)", account) == micro
            counts.append(_ledger_sum(conn, "COUNT(*)"))
            assert not Path(f"{copy}-wal").exists()
        assert counts == sorted(counts) and counts[-1] > 0
    finally:
        daemon.terminate()
        daemon.wait(20)
        sim.stop()


def _ledger_sum(conn: sqlite3.Connection, what: str, account: str | None = None) -> int:
    """`what` summed over the ledger's tables (`ledger` and, since schema 9, a table of the
    gateway's entries per day), as anyone reading a backup file would."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                         "AND (name='ledger' OR name GLOB 'ledger_d[0-9]*')")]
    where = "" if account is None else " WHERE account=?"
    return sum(conn.execute(f"SELECT COALESCE({what}, 0) FROM {t}{where}",
                            () if account is None else (account,)).fetchone()[0]
               for t in tables)


def test_backup_failure_is_one_error_line(tmp_path: Path) -> None:
    env = {**os.environ}
    missing = _cli(env, "backup", "--db", str(tmp_path / "none.db"), str(tmp_path / "x.db"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1
    db = tmp_path / "agent.db"
    from edge_agent.store import Store

    Store(db).close()
    unwritable = _cli(env, "backup", "--db", str(db), str(tmp_path / "no" / "such" / "x.db"))
    assert unwritable.returncode == 1, unwritable.stderr
    assert unwritable.stderr.startswith("error:") and unwritable.stderr.count("\n") == 1
    (tmp_path / "dir").mkdir()
    ok = _cli(env, "backup", "--db", str(db), str(tmp_path / "dir"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "dir" / "agent.db").exists()
