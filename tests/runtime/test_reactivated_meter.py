"""A meter dropped from agent.toml and listed again: nothing it counted while nobody polled it
is billed (it may have been in another house, the account may be another's now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.prepaid.records import Poll, RegisterReading
from edge_agent.runtime.daemon import Agent
from tests.helpers import agent_config

M1, M2 = "000000000001", "000000000002"


def _poll(meter: str, ts: datetime, kwh: str) -> Poll:
    return Poll(meter, ts, True, RegisterReading(meter, ts, D(kwh)),
                [("forward_active_total", kwh)])


def _agent(tmp: Path, meters: list[str]) -> Agent:
    return Agent(load_config(agent_config(tmp, "/dev/null", meters, initial_kwh="100.00")))


def _stop(agent: Agent) -> None:
    agent.processing.shutdown()
    agent.store.close()


def test_a_meter_listed_again_starts_from_a_new_baseline(tmp_path: Path) -> None:
    start = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    agent = _agent(tmp_path, [M1, M2])
    agent.processor.process([_poll(M1, start, "101.00"), _poll(M2, start, "100.00")], start)
    billed = agent.store.balance("A1")
    assert billed < 0  # 1 kWh
    _stop(agent)
    _stop(agent := _agent(tmp_path, [M2]))  # dropped from the file: deactivated
    agent = _agent(tmp_path, [M1, M2])  # listed again, 20 days later, the register moved on
    try:
        [event] = agent.store.events(types=["meter_reactivated"])
        assert event["meter"] == M1 and event["severity"] == "warning"
        assert event["detail"]["last_billed_kwh"] == "101.00"
        later = start + timedelta(days=20)
        agent.processor.process([_poll(M1, later, "900.00")], later)
        assert agent.store.balance("A1") == billed  # the 799 kWh nobody saw: not billed
        agent.processor.process([_poll(M1, later + timedelta(hours=1), "902.00")],
                                later + timedelta(hours=1))
        assert agent.store.balance("A1") < billed  # billed again from the new baseline
        assert [m.address for m in agent.store.meters()] == [M1, M2]
    finally:
        _stop(agent)
