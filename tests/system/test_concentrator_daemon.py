"""The daemon with `[concentrator]` on: at start it reads the meters' freezes before polling,
and reads their clocks (one meter is 90 s off: `clock_deviation`, once); restarted, it queues
no `lineloss` or `usage` message twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.clock import Clock
from edge_agent.config import load_config
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.clock import SimClock
from firmware_sim.dlt645_meter import FrozenRecord
from firmware_sim.total_meter import make_total_meter
from tests.helpers import agent_config, wait_for

TZ = ZoneInfo("Asia/Shanghai")
TOTAL = "000000000099"
CONCENTRATOR = """
[concentrator]
enabled = true
clock_trust = "distrust"
"""



def test_daemon_reads_freezes_at_start_and_watches_clocks(tmp_path) -> None:
    local_now = datetime.now(TZ).replace(tzinfo=None)
    meters = make_meters(2, clock=SimClock(local_now), load_kw=D("1"))
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    for meter in meters:  # three daily freezes already made, newest first
        for n in range(3):
            kwh = D(100 - 24 * n)
            meter.daily.append(FrozenRecord(midnight - timedelta(days=n),
                                            (kwh, D(0), D(0), kwh, D(0))))
    meters[1].clock_offset = timedelta(seconds=90)
    sim = SimBus(meters, baud=9600).start()
    try:
        config = load_config(agent_config(tmp_path, sim.port, [m.address for m in meters],
                                          poll_interval=0.5, initial_kwh="200.00",
                                          extra=CONCENTRATOR))
        agent = Agent(config)
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            store = agent.store
            today = midnight.date()
            days = {today - timedelta(days=n) for n in (1, 2, 3)}
            assert wait_for(lambda: all(store.freeze_days(m.address, today - timedelta(days=7))
                                        == days for m in meters)), "freezes not read"
            assert wait_for(lambda: len(store.meter_clocks()) == 2), "clocks not read"
            clocks = {c["meter"]: c for c in store.meter_clocks()}
            assert abs(clocks[meters[0].address]["deviation"]) < 2
            assert 88 <= clocks[meters[1].address]["deviation"] <= 92
            (event,) = store.events(types=["clock_deviation"])
            assert event["meter"] == meters[1].address
            # freezes before the commissioning reading are kept, never billed
            assert [e for e in store.ledger() if e["kind"] == "charge"
                    and "frozen" in e["id"]] == []
            assert store.events(types=["frozen_backfill"]) == []
        finally:
            agent.stop()
            runner.join(10)
        assert not runner.is_alive()
    finally:
        sim.stop()



class WorldClock(Clock):
    """The gateway's clock follows the simulators' world clock."""

    def __init__(self, world: SimClock) -> None:
        self.world = world

    def now(self) -> datetime:
        return self.world.now().replace(tzinfo=TZ).astimezone(UTC)


def queued(store: Any) -> dict[str, list[tuple[str, ...]]]:
    """Keys of the `lineloss` and `usage` messages in the outbox, in order."""
    out: dict[str, list[tuple[str, ...]]] = {"lineloss": [], "usage": []}
    for _, kind, payload in store.pending(10000):
        body = json.loads(payload)
        if kind == "lineloss":
            out[kind].append((body["period"], body["start"], body["incomplete"]))
        elif kind == "usage":
            out[kind].append((body["account"], body["day"]))
    return out


def test_restarted_daemon_sends_no_lineloss_or_usage_twice(tmp_path: Path) -> None:
    """The daemon closes yesterday again after a restart: what it already queued is not queued
    again; what changed (a customer's freezes, read only now, complete the day) is."""
    world = SimClock(datetime(2026, 4, 1, 12), speed=0)
    customers = make_meters(3, clock=world, load_kw=D("1"))
    total = make_total_meter(TOTAL, customers, loss_rate=D("0.03"))
    sim = SimBus([*customers, total], baud=9600).start()
    sim.advance_to(datetime(2026, 4, 3, 10, 5))  # the meters froze the 2nd and 3rd, 00:00
    tables = "".join(
        f'[[meter]]\naddress = "{m.address}"\nbus = "bus1"\naccount = "A{n}"\n'
        f'tariff = "flat"\nbehind = "{TOTAL}"\n'
        f'initial_kwh = "{m.energy[0].quantize(D("0.01"), rounding=ROUND_DOWN)}"\n\n'
        for n, m in enumerate(customers, 1))
    tables += f'[[meter]]\naddress = "{TOTAL}"\nbus = "bus1"\nrole = "total"\n\n'
    path = agent_config(tmp_path, sim.port, [], poll_interval=2.0, extra=CONCENTRATOR)
    path.write_text(path.read_text().replace("[policy]", tables + "[policy]"))
    world.speed = 1.0

    def run_until(done: Callable[[dict[str, list[tuple[str, ...]]]], bool]
                  ) -> dict[str, list[tuple[str, ...]]]:
        agent = Agent(load_config(path), clock=WorldClock(world))
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            assert wait_for(lambda: done(queued(agent.store)), timeout=30), queued(agent.store)
            time.sleep(1.5)  # more turns of the daemon's loop: nothing else may be queued
            return queued(agent.store)
        finally:
            agent.stop()
            runner.join(10)
            assert not runner.is_alive()

    day = ("day", "2026-04-01T16:00:00Z")
    try:
        customers[2].fault = "silent"  # its freezes are not read: the day is incomplete
        first = run_until(lambda q: bool(q["lineloss"]) and len(q["usage"]) >= 2)
        assert first == {"lineloss": [(*day, True)],
                         "usage": [("A1", "2026-04-02"), ("A2", "2026-04-02")]}
        customers[2].fault = None  # back for the restart: its freezes complete the day
        second = run_until(lambda q: len(q["lineloss"]) >= 2 and len(q["usage"]) >= 3)
        assert second == {"lineloss": [(*day, True), (*day, False)],
                          "usage": [("A1", "2026-04-02"), ("A2", "2026-04-02"),
                                    ("A3", "2026-04-02")]}
    finally:
        sim.stop()
