"""The daemon with `[concentrator]` on: at start it reads the meters' freezes before polling,
and reads their clocks (one meter is 90 s off: `clock_deviation`, once)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

from edge_agent.config import load_config
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.clock import SimClock
from firmware_sim.dlt645_meter import FrozenRecord
from tests.helpers import agent_config, wait_for

TZ = ZoneInfo("Asia/Shanghai")
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
