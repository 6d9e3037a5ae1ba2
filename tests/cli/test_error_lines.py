"""Every verb, given wrong inputs, answers with its exit code and exactly one `error:` line.

Table-driven: each case is a command line run as a real subprocess (tracebacks would show on
stderr there, not be swallowed by a test runner), with the exit code it must give.  Inputs
that once gave tracebacks are in the table by name (issue 12).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, agent_config

FLAT = str(REPO / "config" / "tariffs" / "flat.toml")
EXE = [sys.executable, "-m", "edge_agent"]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        **extra: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=30, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          **extra)  # type: ignore[call-overload]


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "r.csv").write_text("timestamp,meter,kwh\n2026-01-01T00:00,000000000001,1\n")
        (tmp / "garbage.pem").write_text("x\n")
        (tmp / "bad-tariff.toml").write_text("id = \n")
        agent_config(tmp, "/dev/null", ["000000000001"])
        from edge_agent.headend.keys import create_pair

        create_pair(tmp / "k", "headend-1")
        yield tmp


# (arguments, exit code); {tmp} is the work directory.
CASES: list[tuple[list[str], int]] = [
    (["sim", "--load", "abc"], 2),
    (["sim", "--load", "-1"], 2),
    (["sim", "--time-scale", "-1"], 2),
    (["sim", "--baud", "0"], 2),
    (["sim", "--fault", "nosuch=silent"], 2),
    (["sim", "--protocol", "modbus", "--model", "nosuch"], 2),
    (["read", "-p", "/dev/null", "-a", "000000000001", "--retries", "-5"], 2),
    (["read", "-p", "/dev/null", "-a", "000000000001", "--timeout", "-1"], 2),
    (["read", "-p", "/dev/null", "-a", "000000000001", "--baud", "0"], 2),
    (["read", "-p", "/dev/null", "-a", "000000000001", "nosuchquantity"], 2),
    (["read", "-p", "/dev/edge-agent-missing", "-a", "000000000001"], 1),
    (["read", "-p", "/dev/null"], 2),
    (["read", "-a", "000000000099"], 2),
    (["scan"], 2),
    (["run", "--once", "--nosuch"], 2),
    (["read", "-p", "/dev/null", "--protocol", "modbus", "--unit", "1", "--model", "x"], 2),
    (["scan", "-p", "/dev/null", "--protocol", "modbus", "--model", "chint-ddsu666",
      "--units", "abc"], 2),
    (["relay", "-p", "/dev/edge-agent-missing", "-a", "000000000001", "trip"], 1),
    (["relay", "-p", "/dev/null", "-a", "000000000001", "explode"], 2),
    (["relay", "-p", "/dev/null", "-a", "000000000001", "trip", "--valid-minutes", "-1"], 2),
    (["scan", "-p", "/dev/null", "--protocol", "modbus", "--model", "chint-ddsu666",
      "--units", "5-1"], 2),
    (["sim", "--tcp", "99999"], 2),
    (["frame", "encode"], 2),
    (["frame", "decode", "68"], 1),
    (["status", "--db", "{tmp}"], 1),
    (["meters", "--db", "{tmp}/r.csv"], 1),
    (["keys", "create", "--out", "{tmp}/r.csv"], 2),
    (["keys", "install-headend", "../../x", "{tmp}/k/headend-1.pub"], 2),
    (["keys", "install-headend", "a/b", "{tmp}/k/headend-1.pub"], 2),
    (["keys", "install-headend", ".hidden", "{tmp}/k/headend-1.pub"], 2),
    (["keys", "install-headend", "good", "{tmp}/garbage.pem"], 2),
    (["keys", "install-headend", "good", "{tmp}/nosuch.pub"], 2),
    (["keys", "create", "--out", "/proc/x"], 1),
    (["keys", "create", "--name", "../../evil", "--out", "{tmp}/k2"], 2),
    (["keys", "create", "--name", "headend-1", "--out", "{tmp}/k"], 2),
    (["keys", "show", "--name", "../x"], 2),
    (["bill", "replay", "{tmp}/r.csv", "--tariff", FLAT, "--timezone", "Mars/Base"], 2),
    (["bill", "replay", "{tmp}/r.csv", "--tariff", FLAT, "--multiplier", "0"], 2),
    (["bill", "replay", "{tmp}/r.csv", "--tariff", FLAT, "--opening", "x"], 2),
    (["bill", "replay", "{tmp}/r.csv", "--tariff", FLAT, "--topup", "nonsense"], 2),
    (["bill", "replay", "{tmp}/r.csv", "--tariff", "{tmp}/bad-tariff.toml"], 2),
    (["tariff", "check", "{tmp}/bad-tariff.toml"], 1),
    (["frame", "decode", "zz"], 1),
    (["--config", "{tmp}/nosuch.toml", "meters"], 2),
    (["--config", "{tmp}/nosuch.toml", "run"], 2),
    (["--config", "{tmp}/garbage.pem", "status"], 2),
    (["meters", "--db", "{tmp}/nosuch.db"], 2),
    (["ledger", "--limit", "-1", "--db", "{tmp}/nosuch.db"], 2),
    (["events", "--limit", "0"], 2),
    (["nosuchverb"], 2),
    (["status", "--nosuchoption"], 2),
]


@pytest.mark.parametrize(("args", "code"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_one_error_line(workdir: Path, args: list[str], code: int) -> None:
    argv = [a.replace("{tmp}", str(workdir)) for a in args]
    assert_one_error_line(run(argv, workdir, {"EDGE_AGENT_CONFIG": str(workdir /
                                                                       "agent.toml")}), code)


def _config_with(tmp: Path, extra_agent: str) -> Path:
    path = agent_config(tmp, "/dev/null", ["000000000001"])
    text = path.read_text().replace("[agent]\n", f"[agent]\n{extra_agent}\n", 1)
    path.write_text(text)
    return path


def test_run_with_metrics_port_out_of_range(tmp_path: Path) -> None:
    config = _config_with(tmp_path, "metrics_port = 99999")
    assert_one_error_line(run(["--config", str(config), "run"], tmp_path), 2)


def test_run_with_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = _config_with(tmp_path, f"metrics_port = {taken.getsockname()[1]}")
        result = run(["--config", str(config), "run"], tmp_path)
    assert_one_error_line(result, 2)
    assert "metrics_port" in result.stderr
    assert "<3>" in result.stdout  # and the journal has it at priority err


# -- a user who may read but not write the database --------------------------------------
READ_VERBS = [["meters"], ["status"], ["balance"], ["ledger"], ["events"], ["outbox"]]


def _without_write(args: list[str]) -> list[str]:
    """As root, drop the capability to override file modes (so a 0444 file in a 0555
    folder cannot be written, as for an operator who is not the agent's user)."""
    if os.geteuid() != 0:
        return args
    caps = "-dac_override,-dac_read_search"
    return ["--setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *args]


def run_without_write(args: list[str]) -> subprocess.CompletedProcess[str]:
    argv = _without_write(args)
    prefix = []
    if argv and argv[0] == "--setpriv":
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop write access")
        prefix, argv = ["setpriv", *argv[1:3]], argv[3:]
    return subprocess.run([*prefix, *EXE, *argv], capture_output=True, text=True, timeout=30,
                          cwd="/", env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def readonly_db() -> Iterator[Path]:
    from datetime import UTC, datetime
    from decimal import Decimal

    from edge_agent.store import MeterRecord, Store

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name) / "db"
        folder.mkdir()
        store = Store(folder / "agent.db")
        store.add_meter(MeterRecord("000000000001", "bus1", "A1", "flat"), Decimal("1"),
                        datetime.now(UTC))
        store.close()
        os.chmod(name, 0o755)
        (folder / "agent.db").chmod(0o444)
        folder.chmod(0o555)
        yield folder / "agent.db"
        folder.chmod(0o755)


@pytest.mark.parametrize("verb", READ_VERBS, ids=[v[0] for v in READ_VERBS])
def test_reading_verbs_work_for_a_user_who_cannot_write(readonly_db: Path,
                                                        verb: list[str]) -> None:
    result = run_without_write([*verb, "--db", str(readonly_db)])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_writing_verb_refused_in_one_line_for_a_user_who_cannot_write(
        readonly_db: Path) -> None:
    result = run_without_write(["commission", "remove", "000000000001", "--db",
                                str(readonly_db)])
    assert_one_error_line(result, 1)
    assert "write" in result.stderr


def test_sim_modbus_prints_its_port(tmp_path: Path) -> None:
    """`sim --protocol modbus` (human output) names its pty; a NameError once broke it."""
    proc = subprocess.Popen([*EXE, "sim", "--protocol", "modbus", "-n", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "/dev/pts/" in line and "unit:1, unit:2" in line, err
    assert "Traceback" not in err


def test_run_with_an_unknown_tariff_exits_2_and_says_so_at_err(tmp_path: Path) -> None:
    config = agent_config(tmp_path, "/dev/null", ["000000000001"], tariff="no-such-tariff")
    result = run(["--config", str(config), "run"], tmp_path)
    assert_one_error_line(result, 2)
    assert "no-such-tariff" in result.stderr
    assert any(line.startswith("<3>") and "not starting" in line
               for line in result.stdout.splitlines())


def test_the_error_line_carries_priority_err_only_when_stderr_is_the_journal(
        tmp_path: Path) -> None:
    """Under systemd (JOURNAL_STREAM names stderr's device:inode) `run`'s configuration
    error must reach `journalctl -p err`; anywhere else the line stays plain."""
    bad = tmp_path / "agent.toml"
    bad.write_text("[agent]\nnot_a_key = 1\n")
    for journal in (True, False):
        sink = tmp_path / f"stderr-{journal}"
        with sink.open("w") as err:
            found = os.fstat(err.fileno())
            stream = f"{found.st_dev}:{found.st_ino}" if journal else f"{found.st_dev}:1"
            done = subprocess.run([sys.executable, "-m", "edge_agent", "--config", str(bad),
                                   "run"], stderr=err, stdout=subprocess.DEVNULL, timeout=30,
                                  env={**os.environ, "JOURNAL_STREAM": stream})
        lines = sink.read_text().splitlines()
        assert done.returncode == 2
        assert len(lines) == 1, lines
        assert lines[0].startswith("<3>error: " if journal else "error: "), lines
        assert "not_a_key" in lines[0]
