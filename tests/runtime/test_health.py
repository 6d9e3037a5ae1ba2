"""Bus health, the watchdog's interval, journal priorities and the metrics (issue 12)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.cli.daemon import JournalFormatter
from edge_agent.config import load_config
from edge_agent.errors import BusError, MeterTimeout
from edge_agent.runtime import health
from edge_agent.runtime.assembly import build_agent
from edge_agent.runtime.systemd import Notifier, watchdog_interval
from firmware_sim.bus import SimBus, make_meters
from tests.conftest import free_port
from tests.helpers import agent_config


class Capture(logging.Handler):
    """The journal lines as `run` writes them (formatter and all)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JournalFormatter("%(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def journal() -> Capture:
    handler = Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def bus(interval: float = 1.0) -> health.BusHealth:
    return health.BusHealth("bus1", "/dev/ttyUSB0", interval, started=100.0)


def test_states_ok_degraded_stalled_and_each_change_logged_once(journal: Capture) -> None:
    b = bus()
    now = datetime.now(UTC)
    b.cycle_stored({"m1": True, "m2": True}, 0.4, 101.0, now)
    assert b.check(101.0) == health.OK
    b.cycle_stored({"m1": True, "m2": False}, 0.4, 102.0, now)
    b.cycle_stored({"m1": True, "m2": False}, 0.4, 103.0, now)
    assert b.check(103.0) == health.DEGRADED
    assert [line for line in journal.lines if "stopped answering" in line] == [
        "<4>edge_agent.health: bus bus1: 1 meter(s) stopped answering: m2"]
    assert b.check(103.0 + 5.1) == health.STALLED  # limit: max(3 x 1 s, 5 s)
    assert b.check(109.0) == health.STALLED
    stalled = [line for line in journal.lines if "stalled" in line]
    assert len(stalled) == 1 and stalled[0].startswith("<3>")
    b.cycle_stored({"m1": True, "m2": True}, 0.4, 110.0, now)
    assert b.check(110.0) == health.OK
    assert any(line.startswith("<6>") and "answer again: m2" in line for line in journal.lines)
    assert (b.requests, b.replies, b.timeouts, b.cycles) == (8, 6, 2, 4)


def test_a_failed_cycle_is_logged_once_per_distinct_error(journal: Capture) -> None:
    b = bus()
    for _ in range(5):
        b.cycle_failed(BusError("cannot open port /dev/ttyUSB0: gone"), True, 0.01)
    b.cycle_failed(MeterTimeout("000000000001 did not answer"), False, 0.01)
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        b.cycle_failed(exc, False, 0.01)
    assert b.state(101.0) == health.DEGRADED
    failed = [line for line in journal.lines if "poll cycle failed" in line]
    assert len(failed) == 3
    assert failed[0].startswith("<3>") and "gone" in failed[0]  # a port error: err
    assert failed[1].startswith("<4>") and "Traceback" not in failed[1]  # expected: warning
    assert failed[2].startswith("<3>") and "Traceback" in failed[2]  # a bug: err, traceback
    assert "\n" not in failed[2]  # folded into one journal record


def test_a_traceback_is_one_record_at_err(journal: Capture) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("edge_agent").error("edge-agent crashed", exc_info=True)
    [line] = [line for line in journal.lines if "crashed" in line]
    assert line.startswith("<3>edge_agent: edge-agent crashed | Traceback") and "boom" in line


@pytest.mark.parametrize(("event", "priority"), [
    ({"type": "relay_tripped", "severity": "info", "meter": "000000000001"}, 5),
    ({"type": "relay_failed", "severity": "critical", "meter": "000000000001",
      "detail": {"error": "no relay"}}, 3),
    ({"type": "trip_guard", "severity": "critical", "detail": {"held": 40}}, 3),
    ({"type": "meter_offline", "severity": "warning", "meter": "000000000001"}, 4),
    ({"type": "meter_online", "severity": "info", "meter": "000000000001"}, 6),
])
def test_events_reach_the_journal_at_their_priority(journal: Capture, event: dict[str, object],
                                                    priority: int) -> None:
    health.journal_event(event)
    assert journal.lines[-1].startswith(f"<{priority}>edge_agent.events: {event['type']}")


def test_port_problems_are_named(tmp_path: Path) -> None:
    assert "does not exist" in (health.port_problem(str(tmp_path / "ttyUSB7")) or "")
    (tmp_path / "plain").write_text("")
    assert "not a serial device" in (health.port_problem(str(tmp_path / "plain")) or "")
    assert health.port_problem("socket://127.0.0.1:4001") is None
    with SimBus(make_meters(1), baud=9600) as sim:
        assert health.port_problem(sim.port) is None


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) == 30.0


def test_notifier_pings_at_its_interval_not_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(0.05)
    notifier = Notifier(str(path), interval=0.3)
    sent = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the daemon's loop calls it every 0.2 s; here more
        sent += notifier.watchdog()
        time.sleep(0.01)
    received = 0
    try:
        while listener.recv(64) == b"WATCHDOG=1":
            received += 1
    except TimeoutError:
        pass
    listener.close()
    assert 3 <= sent == received <= 5


def test_metrics_per_bus_memory_outbox_age_build_info_no_balances_and_head(
        tmp_path: Path) -> None:
    with SimBus(make_meters(2), baud=9600) as sim:
        port = free_port()
        path = agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                            poll_interval=0.2)
        path.write_text(path.read_text().replace("[agent]\n",
                                                 f"[agent]\nmetrics_port = {port}\n"))
        sim.meters[1].fault = "silent"
        agent = build_agent(load_config(path))
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            time.sleep(1.5)
            url = f"http://127.0.0.1:{port}/metrics"
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                          timeout=5)
            status = agent.status()
        finally:
            agent.stop()
            runner.join(20)
    assert head.status == 200 and head.read() == b""
    assert int(head.headers["Content-Length"]) > 0
    assert 'edge_agent_bus_state{bus="bus1",state="degraded"} 1' in body
    assert 'edge_agent_bus_state{bus="bus1",state="ok"} 0' in body
    assert 'edge_agent_bus_requests_total{bus="bus1"}' in body
    assert 'edge_agent_bus_timeouts_total{bus="bus1"}' in body
    assert 'edge_agent_bus_last_success_timestamp_seconds{bus="bus1"}' in body
    assert 'edge_agent_bus_poll_duration_seconds{bus="bus1"}' in body
    assert "edge_agent_outbox_oldest_age_seconds " in body
    assert "process_resident_memory_bytes " in body
    assert 'edge_agent_build_info{version="' in body
    assert "balance" not in body
    assert status["state"] == "degraded"
    assert status["buses"][0]["state"] == "degraded"
    [bus_row] = status["health"]["buses"]
    assert bus_row["state"] == "degraded" and bus_row["timeouts"] >= 1


def test_a_thread_that_dies_is_one_err_record(journal: Capture) -> None:
    import threading as th

    from edge_agent.cli.daemon import setup_logging

    saved_hook, root = th.excepthook, logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("info")
        root.addHandler(journal)

        def die() -> None:
            raise KeyError("gone")

        worker = th.Thread(target=die, name="bus x")
        worker.start()
        worker.join()
    finally:
        th.excepthook = saved_hook
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    [line] = [line for line in journal.lines if "crashed" in line]
    assert line.startswith("<3>edge_agent: thread bus x crashed | Traceback") and "gone" in line


def test_a_long_cycle_that_keeps_polling_is_not_stalled() -> None:
    class Clock:
        now = 100.0

        def monotonic(self) -> float:
            return self.now

    class Driver:
        closed = False

        def poll(self, meter: str) -> str:
            return meter

        def close(self) -> None:
            self.closed = True

    clock, b, driver = Clock(), bus(), Driver()
    wrapped = health.ActivityDriver(driver, b, clock)
    for step in range(1, 20):  # one cycle of 19 meters, one a second: longer than 5 s
        clock.now = 100.0 + step
        assert wrapped.poll(f"m{step}") == f"m{step}"
        assert b.state(clock.now) != health.STALLED
    assert b.state(clock.now + 5.1) == health.STALLED  # and a hang is still caught
    wrapped.close()
    assert driver.closed
