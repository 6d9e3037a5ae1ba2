"""Head-end changes to a meter in agent.toml survive restart and SIGHUP; the file's conflicting
value raises an event instead of overwriting; a meter dropped from the file is deactivated
(issue 11, point 3).  The daemon runs as a subprocess against a real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal as D
from pathlib import Path

from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.headend import HeadEnd
from tests.conftest import Broker
from tests.helpers import agent_config, contract_problems, mqtt_extra

METERS = ["000000000001", "000000000002", "000000000003"]


@contextmanager
def daemon(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def meters(tmp: Path) -> dict[str, tuple[str, bool, bool]]:
    store = Store(tmp / "agent.db")
    try:
        return {m.address: (m.tariff, m.keep_power, m.active) for m in store.meters(False)}
    finally:
        store.close()


def events(tmp: Path, kind: str) -> list[dict[str, object]]:
    store = Store(tmp / "agent.db")
    try:
        return store.events(types=[kind], limit=100)
    finally:
        store.close()


def wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_headend_changes_survive_restart_and_sighup(tmp_path: Path, broker: Broker) -> None:
    sim = SimBus(make_meters(3, load_kw=D(0)), baud=9600).start()
    extra = mqtt_extra(tmp_path, broker.port)
    config = agent_config(tmp_path, sim.port, METERS, poll_interval=0.5, extra=extra)
    text = config.read_text()
    head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp_path / "keys" / "headend-1.key").start()
    try:
        with daemon(config):
            assert head.wait_for(lambda: head.status is not None and head.status["online"])
            for kind, args in [
                    ("set_policy", {"policy": {"no_cutoff": True}}),
                    ("assign_tariff", {"meter": METERS[0], "tariff_id": "residential-tou"}),
                    ("relay", {"meter": METERS[1], "action": "keep_power_on"}),
                    ("remove_meter", {"meter": METERS[2]})]:
                answer = head.call(kind, args)
                assert answer and answer["status"] == "ok", answer
        after_commands = meters(tmp_path)
        assert after_commands[METERS[0]][0] == "residential-tou"
        assert after_commands[METERS[1]][1] is True
        assert after_commands[METERS[2]][2] is False
        shown = _cli(config, "meters", "--json")
        assert shown.returncode == 0, shown.stderr
        by_meter = {r["meter"]: r for r in json.loads(shown.stdout)}
        assert by_meter[METERS[0]]["settings"]["tariff"]["source"] == "headend"
        assert by_meter[METERS[1]]["set_by"] == "keep_power:headend"

        # Restart with the same file: the head end's changes stay.
        with daemon(config) as proc:
            assert head.wait_for(lambda: head.status is not None and head.status["online"]
                                 and head.status.get("meters") == 2, timeout=20)
            assert meters(tmp_path) == after_commands
            # The file now says another tariff for meter 1; SIGHUP: the head end's is kept,
            # and the disagreement is an event (once).
            config.write_text(text.replace('tariff = "flat"', 'tariff = "winter-tiered"', 1)
                              .replace("[policy]\n", "[policy]\nno_cutoff = false\n"))
            proc.send_signal(signal.SIGHUP)
            assert wait(lambda: len(events(tmp_path, "setting_conflict")) == 2)
            settings = {e["detail"]["setting"] for e in events(tmp_path, "setting_conflict")}
            assert settings == {"tariff", "policy.no_cutoff"}
            assert meters(tmp_path) == after_commands
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert len(events(tmp_path, "setting_conflict")) == 2  # once per change of the file
            # Meter 2 dropped from the file: deactivated with an event.
            start = text.index('[[meter]]\naddress = "000000000002"')
            end = text.index("[[meter]]", start + 1)
            config.write_text((text[:start] + text[end:]).replace(
                'tariff = "flat"', 'tariff = "winter-tiered"', 1).replace(
                "[policy]\n", "[policy]\nno_cutoff = false\n"))
            proc.send_signal(signal.SIGHUP)
            assert wait(lambda: not meters(tmp_path)[METERS[1]][2])
            assert events(tmp_path, "meter_deactivated")
        assert contract_problems(head.messages) == []
    finally:
        head.stop()
        sim.stop()


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_commission_goes_through_the_running_daemon(tmp_path: Path) -> None:
    sim = SimBus(make_meters(3, load_kw=D(0)), baud=9600).start()
    config = agent_config(tmp_path, sim.port, METERS[:1], poll_interval=0.3)
    add = ["commission", "add", METERS[2], "--bus", "bus1", "--account", "A3",
           "--tariff", "flat", "--initial-kwh", "0.00"]
    try:
        with daemon(config):
            assert wait(lambda: (tmp_path / "control.sock").exists())
            for bad, why in [(["--bus", "bus9"], "unknown bus"),
                             (["--tariff", "nope"], "unknown tariff")]:
                out = _cli(config, *add, *bad)
                assert out.returncode == 1 and why in out.stderr, out.stderr
            short = _cli(config, "commission", "add", "123", "--bus", "bus1", "--account",
                         "A9", "--tariff", "flat", "--initial-kwh", "0")
            assert short.returncode == 1 and "12 digits" in short.stderr, short.stderr
            out = _cli(config, *add, "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["via"] == "daemon"
            # the daemon polls it at once: no restart needed
            assert wait(lambda: _polled(tmp_path, METERS[2]))
        # a meter commissioned by a technician is not in agent.toml, and stays after restart
        with daemon(config):
            time.sleep(1.5)
            assert meters(tmp_path)[METERS[2]][2] is True
            out = _cli(config, "commission", "remove", METERS[2])
            assert out.returncode == 0, out.stderr
        with daemon(config):
            time.sleep(1.0)
            assert meters(tmp_path)[METERS[2]][2] is False
        assert events(tmp_path, "meter_deactivated") == []
    finally:
        sim.stop()


def _polled(tmp: Path, meter: str) -> bool:
    store = Store(tmp / "agent.db")
    try:
        return any(s["meter"] == meter and s["online"] for s in store.meter_status())
    finally:
        store.close()
