"""The daemon over simulated meters: run down credit, alert, alarm, trip, top up, restore."""

from __future__ import annotations

import functools
import time
from decimal import Decimal as D

from edge_agent.config import load_config
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.daemon import Agent
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config
from tests.helpers import wait_for as _wait_for

POLICY = """
alert_levels = ["1.00"]
alarm_grace_minutes = 0
relay_backoff_seconds = 0.05
close_mode = "close_allowed"
"""



wait_for = functools.partial(_wait_for, timeout=15.0)  # this file's bound


def test_credit_runs_down_trips_and_restores(tmp_path) -> None:
    sim = SimBus(make_meters(2, load_kw=D("36000"), time_scale=1.0), baud=9600).start()
    try:
        config = load_config(agent_config(tmp_path, sim.port, ["000000000001", "000000000002"],
                                          poll_interval=0.3, policy=POLICY))
        agent = Agent(config)
        store = agent.store
        agent.apply_entries([LedgerEntry("open-1", "A1", "opening", D("3.00"),
                                         agent.clock.now()),
                             LedgerEntry("open-2", "A2", "opening", D("1000.00"),
                                         agent.clock.now())])
        meter = sim.meter("000000000001")
        import threading

        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            # 10 kWh per second at 0.56: the 3 yuan last well under a second of load.
            assert wait_for(lambda: meter.relay_open), "meter was never tripped"
            types = [e["type"] for e in store.events(limit=500)]
            assert "low_balance" in types and "credit_exhausted" in types
            assert "relay_tripped" in types
            assert types.index("credit_exhausted") < types.index("relay_tripped")
            assert meter.alarm  # the pre-trip alarm was sent first
            assert not sim.meter("000000000002").relay_open  # well funded: untouched
            tripped_at = meter.register(0)
            time.sleep(0.5)
            assert meter.register(0) == tripped_at  # no consumption while tripped
            assert store.meter_status()[0]["relay"] == "open"
            owed = store.balance("A1")
            assert owed <= 0
            agent.apply_entries([LedgerEntry("pay-1", "A1", "topup", D("50.00") - owed + 1,
                                             agent.clock.now())])
            assert wait_for(lambda: not meter.relay_open), "meter was not closed after top-up"
            assert wait_for(lambda: "relay_closed" in [e["type"] for e in
                                                      store.events(limit=500)])
            assert store.balance("A1") == store.ledger_sum("A1")
        finally:
            agent.stop()
            runner.join(10)
        assert not runner.is_alive()
    finally:
        sim.stop()


def test_silent_meter_is_never_tripped(tmp_path) -> None:
    sim = SimBus(make_meters(1), baud=9600).start()
    try:
        config = load_config(agent_config(tmp_path, sim.port, ["000000000001"],
                                          policy=POLICY))
        agent = Agent(config)
        agent.apply_entries([LedgerEntry("open", "A1", "opening", D("10"), agent.clock.now())])
        agent.start()
        try:
            for future in agent.poll_now():
                future.result(10)
            sim.meters[0].fault = "silent"
            agent.apply_entries([LedgerEntry("adj", "A1", "adjustment", D("-100"),
                                              agent.clock.now())])
            for _ in range(3):
                for future in agent.poll_now():
                    future.result(10)
            assert not sim.meters[0].relay_open and not sim.meters[0].alarm
            types = [e["type"] for e in agent.store.events(limit=100)]
            assert types.count("meter_offline") == 1 and "relay_tripped" not in types
            sim.meters[0].fault = "none"
            for future in agent.poll_now():
                future.result(10)
            assert "meter_online" in [e["type"] for e in agent.store.events(limit=100)]
        finally:
            agent.shutdown()
    finally:
        sim.stop()


def test_tamper_raises_event(tmp_path) -> None:
    sim = SimBus(make_meters(1), baud=9600).start()
    try:
        agent = Agent(load_config(agent_config(tmp_path, sim.port, ["000000000001"])))
        agent.start()
        try:
            agent.poll_now()[0].result(10)
            sim.meters[0].open_cover()
            agent.poll_now()[0].result(10)
            [event] = agent.store.events(types=["tamper"])
            assert event["detail"] == {"counter": "cover_open_count", "from": "0", "to": "1"}
        finally:
            agent.shutdown()
    finally:
        sim.stop()
