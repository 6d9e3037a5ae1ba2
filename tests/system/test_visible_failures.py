"""Failures reach the journal at their priority, reloads never stop the daemon (issue 12).

The daemon runs as a subprocess on simulated meters; its stdout is what journald would read
(`<priority>logger: message`, one line per record).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.bus import SimBus, make_meters
from tests.helpers import REPO, agent_config

EXE = [sys.executable, "-m", "edge_agent"]


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_daemon_left_behind() -> Iterator[None]:
    """A failing test must not leave its daemon polling a pty the next test gets."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def start(config: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*EXE, "--config", str(config), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def lines_at(out: str, priority: int) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"<{priority}>")]


def own_tariffs(tmp: Path, config: Path) -> Path:
    """A tariff directory of the test's own, so the test can break a file in it."""
    folder = tmp / "tariffs"
    shutil.copytree(REPO / "config" / "tariffs", folder)
    config.write_text(config.read_text().replace(str(REPO / "config" / "tariffs"),
                                                 str(folder)))
    return folder


def test_invalid_tariff_and_new_bus_on_sighup_are_refused_and_the_daemon_runs_on(
        tmp_path: Path) -> None:
    with SimBus(make_meters(1), baud=9600) as sim:
        config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5)
        tariffs = own_tariffs(tmp_path, config)
        proc = start(config)
        time.sleep(2.5)
        (tariffs / "flat.toml").write_text("id = \"flat\"\ntype = \"nonsense\"\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, "an invalid tariff on SIGHUP stopped the daemon"
        shutil.copy(REPO / "config" / "tariffs" / "flat.toml", tariffs / "flat.toml")
        text = config.read_text() + (
            '\n[[bus]]\nname = "bus2"\nport = "/dev/edge-agent-nowhere"\nbaud = 9600\n'
            '\n[[meter]]\naddress = "000000000009"\nbus = "bus2"\naccount = "A9"\n'
            'tariff = "flat"\n')
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert proc.poll() is None, "a new [[bus]] on SIGHUP stopped the daemon"
        code, out, err = finish(proc)
    assert code == 0, out + err
    errors = lines_at(out, 3)
    assert any("reload refused" in line and "flat.toml" in line for line in errors), out
    assert any("[[bus]] added" in line and "needs a restart" in line
               for line in lines_at(out, 4)), out
    assert "KeyError" not in out + err and "Traceback" not in err


def test_missing_port_is_one_error_and_status_shows_the_bus_degraded(tmp_path: Path) -> None:
    config = agent_config(tmp_path, str(tmp_path / "ttyUSB9"), ["000000000001"],
                          poll_interval=0.5)
    proc = start(config)
    time.sleep(3)
    status = subprocess.run([*EXE, "--config", str(config), "status", "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=30)
    code, out, err = finish(proc)
    assert code == 0, out + err
    missing = [line for line in lines_at(out, 3) if "ttyUSB9 does not exist" in line]
    assert len(missing) == 1, out  # once, not once per poll
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["daemon"]["running"] is True
    assert [b["state"] for b in data["buses"]] == ["degraded"]
    assert "does not exist" in data["buses"][0]["last_error"]


def test_a_stuck_database_stalls_the_bus_and_says_so_at_err(tmp_path: Path) -> None:
    from edge_agent.store import Store

    with SimBus(make_meters(1), baud=9600) as sim:
        config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5)
        proc = start(config)
        time.sleep(2)
        blocker = Store(tmp_path / "agent.db")
        blocker.conn.execute("BEGIN IMMEDIATE")
        time.sleep(7)  # > max(3 x 0.5 s, 5 s) without a stored cycle
        blocker.conn.execute("ROLLBACK")
        blocker.close()
        time.sleep(2)
        code, out, err = finish(proc)
    assert code == 0, out + err
    assert any("bus bus1" in line and "stalled" in line for line in lines_at(out, 3)), out
    assert any("no longer stalled" in line for line in lines_at(out, 4)), out


def test_silent_meter_is_logged_as_offline_once_and_the_bus_is_degraded(
        tmp_path: Path) -> None:
    with SimBus(make_meters(2), baud=9600) as sim:
        sim.meter("000000000002").fault = "silent"
        config = agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                              poll_interval=0.5)
        proc = start(config)
        time.sleep(13)  # past a heartbeat
        status = subprocess.run([*EXE, "--config", str(config), "status", "--json"],
                                capture_output=True, text=True, cwd=REPO, timeout=30)
        code, out, err = finish(proc)
    assert code == 0, out + err
    warnings = lines_at(out, 4)
    stopped = [line for line in warnings if "stopped answering" in line]
    assert len(stopped) == 1 and "000000000002" in stopped[0], out
    assert any("meter_offline" in line and "000000000002" in line for line in warnings), out
    data = json.loads(status.stdout)
    assert [b["state"] for b in data["buses"]] == ["degraded"], data


CRASH = """
import sys
from edge_agent.runtime import daemon

def boom(self, install_signals=True):
    raise RuntimeError("injected fault")

daemon.Agent.run = boom
from edge_agent.cli import main
sys.argv = ["edge-agent", *sys.argv[1:]]
main()
"""


def test_a_crash_is_one_journal_record_at_priority_err(tmp_path: Path) -> None:
    config = agent_config(tmp_path, "/dev/null", ["000000000001"])
    proc = subprocess.run([sys.executable, "-c", CRASH, "--config", str(config), "run"],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert proc.returncode == 1
    crash = [line for line in proc.stdout.splitlines() if "Traceback" in line]
    assert len(crash) == 1 and crash[0].startswith("<3>"), proc.stdout
    assert "injected fault" in crash[0]
    assert "Traceback" not in proc.stderr


def test_a_database_that_cannot_open_is_one_err_record_and_one_error_line(
        tmp_path: Path) -> None:
    config = agent_config(tmp_path, "/dev/null", ["000000000001"])
    (tmp_path / "agent.db").mkdir()  # the database path is a folder: SQLite cannot open it
    proc = start(config)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert any("agent.db" in line for line in lines_at(out, 3)), out
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_status_says_the_daemon_is_not_running_after_a_kill(tmp_path: Path) -> None:
    with SimBus(make_meters(1), baud=9600) as sim:
        config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5)
        proc = start(config)
        time.sleep(3)
        proc.kill()
        proc.communicate(timeout=10)
    db = tmp_path / "agent.db"
    # a heartbeat from long ago: as if the daemon died 5 minutes back
    from edge_agent.store import Store

    store = Store(db)
    store.set_setting("heartbeat", "2020-01-01T00:00:00+00:00")
    store.close()
    result = subprocess.run([*EXE, "--config", str(config), "status"], capture_output=True,
                            text=True, cwd=REPO, timeout=30)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "NOT RUNNING" in first and "2020-01-01" in first, result.stdout
    data = json.loads(subprocess.run([*EXE, "--config", str(config), "status", "--json"],
                                     capture_output=True, text=True, cwd=REPO,
                                     timeout=30).stdout)
    assert data["daemon"]["running"] is False


def test_a_port_the_agent_may_not_open_is_named_at_err_and_in_config_check(
        tmp_path: Path) -> None:
    """A real permission problem, not a simulated one: the pty is mode 000, and as root the
    agent runs without CAP_DAC_OVERRIDE (through setpriv), so the kernel refuses it as it
    refuses a user without the device's group."""
    import os

    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux's setpriv is part of every Debian system"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    with SimBus(make_meters(1), baud=9600) as sim:
        os.chmod(sim.port, 0o000)
        config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5)
        check = subprocess.run([*prefix, *EXE, "--config", str(config), "config", "check"],
                               capture_output=True, text=True, cwd=REPO, timeout=30)
        proc = subprocess.Popen([*prefix, *EXE, "--config", str(config), "run"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        STARTED.append(proc)
        time.sleep(4)  # ~8 poll cycles at 0.5 s: the denial must be logged once, not per cycle
        status = subprocess.run([*EXE, "--config", str(config), "status", "--json"],
                                capture_output=True, text=True, cwd=REPO, timeout=30)
        code, out, err = finish(proc)
    denied = [line for line in lines_at(out, 3) if "permission denied" in line]
    assert len(denied) == 1, out + err  # once at err, not once per poll
    assert sim.port in denied[0] and "dialout" in denied[0]
    assert "Traceback" not in err, err
    assert code == 0, out + err
    assert check.returncode != 0 and "permission denied" in check.stdout + check.stderr, (
        check.stdout + check.stderr)
    data = json.loads(status.stdout)
    assert [b["state"] for b in data["buses"]] == ["degraded"], data
    assert "permission denied" in data["buses"][0]["last_error"]
