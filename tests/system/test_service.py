"""Operating the daemon: systemd unit, notify protocol, SIGHUP, SIGTERM, local control."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.runtime.assembly import build_agent
from edge_agent.runtime.systemd import Notifier
from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import REPO, agent_config


def test_systemd_unit_verifies(tmp_path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing; .ci/run installs systemd")
    unit = (REPO / "systemd" / "edge-agent.service").read_text()
    exe = os.path.realpath(shutil.which("edge-agent") or sys.executable)
    (tmp_path / "edge-agent.service").write_text(unit.replace("/usr/local/bin/edge-agent", exe))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "edge-agent.service")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for setting in ("Type=notify", "WatchdogSec=", "Restart=always", "SupplementaryGroups=dialout",
                    "StateDirectory=edge-agent", "ConfigurationDirectory=edge-agent",
                    "ProtectSystem=strict"):
        assert setting in unit


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

    def has(self, text: str) -> bool:
        return any(text in m for _, m in self.messages)


def test_notify_ready_watchdog_and_stall(tmp_path) -> None:
    sim = SimBus(make_meters(1), baud=9600).start()
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        config = load_config(agent_config(tmp_path, sim.port, ["000000000001"],
                                          poll_interval=0.5))
        agent = build_agent(config)
        # as systemd with WatchdogSec=0.4 (WATCHDOG_USEC=400000): a ping every 0.2 s
        agent.notifier = Notifier(str(tmp_path / "notify.sock"), interval=0.2)
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        deadline = time.monotonic() + 10
        while not (listener.has("READY=1") and listener.has("WATCHDOG=1")):
            assert time.monotonic() < deadline, listener.messages
            time.sleep(0.05)
        assert listener.has("STATUS=")
        # Stall storage: another process holds the database's write lock.
        blocker = Store(tmp_path / "agent.db")
        blocker.conn.execute("BEGIN IMMEDIATE")
        time.sleep(7)  # > max(3 x 0.5 s, 5 s) without a stored cycle
        recent = [t for t, m in listener.messages if "WATCHDOG=1" in m]
        assert recent and time.monotonic() - recent[-1] > 1.0, "watchdog still fed while stuck"
        blocker.conn.execute("ROLLBACK")
        deadline = time.monotonic() + 10
        while [t for t, m in listener.messages if "WATCHDOG=1" in m][-1] < time.monotonic() - 1:
            assert time.monotonic() < deadline, "watchdog not fed again after recovery"
            time.sleep(0.1)
        agent.stop()
        runner.join(20)
        assert listener.has("STOPPING=1")
    finally:
        listener.stop()
        sim.stop()


def _daemon(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sighup_reloads_what_it_can_and_says_what_needs_a_restart(tmp_path) -> None:
    sim = SimBus(make_meters(1), baud=9600).start()
    try:
        path = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=0.5)
        proc = _daemon(path)
        time.sleep(2.5)
        text = path.read_text().replace('gateway_id = "gw1"', 'gateway_id = "gw2"').replace(
            "[policy]\n", '[policy]\nalert_levels = ["7.00"]\n')
        path.write_text(text)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        path.write_text(text.replace("baud = 9600", "baud = 2401"))  # invalid: refused
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "agent.gateway_id changed: needs a restart" in out
        assert "reloaded: policy, meters, tariffs" in out
        assert "reload refused, configuration invalid" in out and "2401" in out
        assert out.splitlines()[0].startswith("<6>")  # journald priority prefix
    finally:
        sim.stop()


def test_sigterm_during_writes_loses_nothing(tmp_path) -> None:
    rnd = random.Random(7)
    sim = SimBus(make_meters(2, load_kw=D("3600")), baud=9600).start()
    try:
        path = agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                            poll_interval=0.1)
        for _ in range(4):
            proc = _daemon(path)
            time.sleep(rnd.uniform(1.0, 2.0))
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out
            assert "edge-agent stopped" in out
        store = Store(tmp_path / "agent.db")
        states = store.billing_states()
        for meter in ("000000000001", "000000000002"):
            charges = [e for e in store.ledger(limit=100000) if e["meter"] == meter]
            assert [int(e["id"].rsplit(":", 1)[1]) for e in charges] == list(
                range(1, len(charges) + 1))
            assert sum(D(e["detail"]["kwh"]) for e in charges) == states[meter].last_kwh
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        sim.stop()


def test_cli_goes_through_the_running_daemon(tmp_path) -> None:
    sim = SimBus(make_meters(2), baud=9600).start()
    try:
        path = agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                            poll_interval=0.2)
        agent = build_agent(load_config(path))
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            time.sleep(1.0)
            cli = CliRunner()
            seen = sim.requests_seen
            for _ in range(5):  # while the daemon polls the same bus
                out = cli.invoke(main, ["--config", str(path), "read", "-p", sim.port,
                                        "-a", "000000000002", "energy", "voltage", "--json"])
                assert out.exit_code == 0, out.stderr
                assert [r["name"] for r in json.loads(out.stdout)] == ["forward_active_total",
                                                                      "voltage_a"]
            assert sim.requests_seen > seen
            out = cli.invoke(main, ["--config", str(path), "relay", "-p", sim.port,
                                    "-a", "000000000001", "trip", "--json"])
            assert out.exit_code == 0, out.stderr
            assert json.loads(out.stdout)["via"] == "daemon" and sim.meters[0].relay_open
            [event] = agent.store.events(types=["relay_tripped"])
            assert event["detail"]["by"].startswith("technician:")
            out = cli.invoke(main, ["--config", str(path), "scan", "-p", sim.port,
                                    "--timeout", "0.05", "--json"])
            assert json.loads(out.stdout)["meters"] == ["000000000001", "000000000002"]
            out = cli.invoke(main, ["--config", str(path), "status", "--json"])
            assert out.exit_code == 0 and json.loads(out.stdout)["buses"][0]["bus"] == "bus1"
        finally:
            agent.stop()
            runner.join(20)
        # With the daemon stopped, the CLI uses the port itself and still records who.
        out = CliRunner().invoke(main, ["--config", str(path), "relay", "-p", sim.port,
                                        "--baud", "9600", "-a", "000000000001", "direct_close",
                                        "--json"])
        assert out.exit_code == 0, out.stderr
        assert json.loads(out.stdout)["via"] == "direct"
        store = Store(tmp_path / "agent.db")
        assert store.events(types=["technician_relay"])[-1]["detail"]["via"] == "direct"
    finally:
        sim.stop()


def test_metrics_and_health(tmp_path) -> None:
    import urllib.request

    from tests.conftest import free_port

    sim = SimBus(make_meters(2), baud=9600).start()
    try:
        port = free_port()
        path = agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                            poll_interval=0.2)
        path.write_text(path.read_text().replace("[agent]\n", f"[agent]\nmetrics_port = {port}\n"))
        sim.meters[1].fault = "silent"
        agent = build_agent(load_config(path))
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            time.sleep(1.5)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            body = text.decode()
            assert 'edge_agent_meter_online{meter="000000000001",bus="bus1"} 1' in body
            assert 'edge_agent_meter_online{meter="000000000002",bus="bus1"} 0' in body
            assert 'edge_agent_meter_success_ratio{meter="000000000002"} 0.0' in body
            [bus] = agent.status()["health"]["buses"]
            assert bus["meters"] == 2 and bus["online"] == 1 and 0.4 < bus["success_rate"] < 0.6
        finally:
            agent.stop()
            runner.join(20)
    finally:
        sim.stop()
