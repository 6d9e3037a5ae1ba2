"""The operations the head end's command table calls (issue 14): class, top-up seq, force."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from edge_agent.config import parse_config
from edge_agent.errors import Conflict, UnknownMeter, UnknownPolicyClass
from edge_agent.prepaid.enforcement import MeterEnforcement
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.daemon import Agent
from tests.helpers import REPO, at


def test_agent_operations(tmp_path) -> None:
    config = parse_config(f"""
[agent]
database = "{tmp_path / 'agent.db'}"
tariff_dir = "{REPO / 'config' / 'tariffs'}"
[policy]
[policy.classes.hospital]
trips_need_force = true
[accounts.A1]
policy_class = "hospital"
""")
    agent = Agent(config)
    try:
        assert agent.store.account_settings()["A1"] == ("hospital", D(0))
        assert agent.processor.policy_of("A1").trips_need_force
        [event] = agent.store.events(types=["policy_class_set"])
        assert event["detail"]["by"] == "config"
        agent.set_account_class("A2", None, D("100"))
        assert agent.store.account_settings()["A2"] == (None, D("100"))
        with pytest.raises(UnknownPolicyClass):
            agent.set_account_class("A2", "vip")
        entry = LedgerEntry("t5", "A2", "topup", D("10"), at("2026-11-22 09:00"))
        assert agent.apply_topup(entry, 2)
        assert agent.store.events(types=["topup_gap"])[0]["detail"]["missing"] == [1]
        # A hospital account's meter (its enforcement state is all the check reads): a trip
        # without force is refused before any bus is touched; with force it goes on (and
        # here finds no bus for the meter).
        agent.processor.enforcement["m"] = MeterEnforcement("m", "A1")
        with pytest.raises(Conflict, match="need force"):
            agent.operator_relay("m", "trip", "test")
        with pytest.raises(UnknownMeter):
            agent.operator_relay("m", "trip", "test", force=True)
    finally:
        agent.processing.shutdown()
        agent.store.close()


def test_a_class_the_head_end_set_survives_sighup_and_restart(tmp_path) -> None:
    """The head end makes A1 a hospital; the file only gives A1 a tier bonus.  A SIGHUP for
    another change, or a restart, must not put A1 back on the default policy (its meter
    could then be cut off); a key the file itself changes is applied."""
    from edge_agent.config import load_config

    path = tmp_path / "agent.toml"

    def write(bonus: str, overdraft: str = "0") -> None:
        path.write_text(f"""
[agent]
database = "{tmp_path / 'agent.db'}"
tariff_dir = "{REPO / 'config' / 'tariffs'}"
[policy]
overdraft = "{overdraft}"
[policy.classes.hospital]
trips_need_force = true
[accounts.A1]
tier_bonus_kwh = "{bonus}"
""")

    write("100")
    agent = Agent(load_config(path))
    try:
        agent.set_account_class("A1", "hospital", actor="headend")
        write("100", overdraft="5")  # another change, then SIGHUP
        assert not any(n.startswith("refused") for n in agent.reload())
        assert agent.store.account_settings()["A1"] == ("hospital", D("100"))
        assert agent.processor.policy_of("A1").trips_need_force
    finally:
        agent.processing.shutdown()
        agent.store.close()
    agent = Agent(load_config(path))  # a restart
    try:
        assert agent.store.account_settings()["A1"] == ("hospital", D("100"))
        write("150", overdraft="5")  # the file changes the bonus: that key is applied
        agent.reload()
        assert agent.store.account_settings()["A1"] == ("hospital", D("150"))
    finally:
        agent.processing.shutdown()
        agent.store.close()
