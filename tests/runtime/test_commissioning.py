"""`commission add|replace|remove` checks (runtime/operations.py), on a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config
from edge_agent.errors import Conflict, Malformed, RegisterMapError, UnknownBus, UnknownTariff
from edge_agent.runtime.operations import commission
from edge_agent.store import Store
from tests.helpers import agent_config

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TARIFFS = {"flat"}


METER_7 = "000000000007"
ADD_7 = {"action": "add", "address": METER_7, "bus": "bus1", "account": "A7",
         "tariff": "flat", "initial_kwh": "0"}


def _commission_and_bill(tmp_path: Path, fixed: str) -> tuple[Store, Any, Any]:
    """A store and processor at 1.00 a kWh (plus `fixed` TOML), and two steps: `run` a
    technician's commission request at a time, `poll` meter 7 at a register, hours after NOW."""
    from zoneinfo import ZoneInfo

    from edge_agent.prepaid.policy import Policy
    from edge_agent.prepaid.processor import Processor
    from edge_agent.prepaid.records import Poll, RegisterReading
    from edge_agent.prepaid.tariff import tariff_from_text

    config = load_config(agent_config(tmp_path, "/dev/null", []))
    store = Store(tmp_path / "agent.db")
    tariff = tariff_from_text('[tariff]\nid = "flat"\n[energy]\ntype = "flat"\n'
                              'price = "1.00"\n' + fixed)
    processor = Processor(store, {"flat": tariff}, Policy(), ZoneInfo("UTC"), "gw")

    def run(request: dict[str, object], at: datetime) -> None:
        write, _ = commission(store, config, TARIFFS, request, "technician:t", at)
        with store.transaction():
            write()
        processor.reload()

    def poll(kwh: str, hours: int) -> None:
        at = NOW + timedelta(hours=hours)
        processor.process([Poll(METER_7, at, True, RegisterReading(METER_7, at, D(kwh)))],
                          at)

    return store, run, poll


def modbus_add(**over: object) -> dict[str, object]:
    return {"action": "add", "address": "mb-5", "bus": "bus1", "account": "A5",
            "tariff": "flat", "initial_kwh": "1.00", "unit": 5, "model": "eastron-sdm120",
            **over}


@pytest.mark.parametrize(("over", "error"), [
    ({"bus": "bus9"}, UnknownBus),
    ({"tariff": "nope"}, UnknownTariff),
    ({"unit": None}, Malformed),
    ({"unit": 248}, Malformed),
    ({"model": None}, Malformed),
    ({"model": "no-such-map"}, RegisterMapError),
    ({"protocol": "dlt645-2007"}, Malformed),
])
def test_modbus_meter_checked(tmp_path: Path, over: dict[str, object],
                              error: type[Exception]) -> None:
    config = load_config(agent_config(tmp_path, "/dev/null", [], protocol="modbus"))
    store = Store(tmp_path / "agent.db")
    with pytest.raises(error):
        commission(store, config, TARIFFS, modbus_add(**over), "technician:t", NOW)
    assert store.meters(False) == []


def test_add_replace_remove_owned_by_the_technician(tmp_path: Path) -> None:
    config = load_config(agent_config(tmp_path, "/dev/null", []))
    store = Store(tmp_path / "agent.db")
    add = {"action": "add", "address": "000000000007", "bus": "bus1", "account": "A7",
           "tariff": "flat", "initial_kwh": "12.34"}
    with pytest.raises(Malformed):  # DL/T 645 addresses are 12 digits
        commission(store, config, TARIFFS, {**add, "address": "7"}, "technician:t", NOW)
    write, _ = commission(store, config, TARIFFS, add, "technician:t", NOW)
    with store.transaction():
        write()
    with pytest.raises(Conflict):
        commission(store, config, TARIFFS, add, "technician:t", NOW)
    write, _ = commission(store, config, TARIFFS, {"action": "replace", "old": "000000000007",
                                                   "new": "000000000008",
                                                   "old_final_kwh": "20",
                                                   "new_initial_kwh": "0"}, "technician:t", NOW)
    with store.transaction():
        write()
    assert [m.address for m in store.meters()] == ["000000000008"]
    settings = store.meter_settings()
    assert settings["000000000008"]["added"]["source"] == "technician"
    assert settings["000000000007"]["removed"]["value"] == "true"
    assert store.meter("000000000008").commission_kwh == str(D("0"))


def test_a_meter_added_again_bills_under_new_entry_ids(tmp_path: Path) -> None:
    """Removed and commissioned again (moved to another house, or back after a repair): its
    charges must not reuse the ids of its first life, which the head end deduplicates by."""
    store, run, poll = _commission_and_bill(tmp_path, "")
    meter, add = METER_7, ADD_7
    run(add, NOW)
    poll("10", 1)
    poll("20", 2)
    run({"action": "remove", "address": meter}, NOW + timedelta(hours=3))
    run({**add, "account": "A8", "initial_kwh": "20"}, NOW + timedelta(hours=4))
    poll("25", 5)
    poll("30", 6)
    charges = [e for account in ("A7", "A8") for e in store.ledger(account)
               if e["kind"] == "charge"]
    assert [D(e["amount"]) for e in charges] == [D(-10), D(-10), D(-5), D(-5)]
    assert len({e["id"] for e in charges}) == 4  # four charges, four ids


def test_a_replaced_meter_is_billed_up_to_its_final_reading(tmp_path: Path) -> None:
    """A meter that stopped answering is swapped a day later (through the daemon): the
    energy it counted since its last billed reading (100 -> 124 kWh) is the customer's;
    only the swap itself (old final -> new initial) bills nothing."""
    from edge_agent.runtime.daemon import Agent
    from edge_agent.runtime.operations import commission_through_agent
    from tests.helpers import energy_poll

    old, new = "000000000007", "000000000008"
    agent = Agent(load_config(agent_config(tmp_path, "/dev/null", [old],
                                           initial_kwh="90.00")))
    try:
        processor, at = agent.processor, agent.clock.now()
        processor.process([energy_poll(old, at, "100.00")], at)
        commission_through_agent(agent, {"action": "replace", "old": old, "new": new,
                                         "old_final_kwh": "124.00",
                                         "new_initial_kwh": "0.00"}, "technician:t")
        later = at + timedelta(hours=1)
        processor.process([energy_poll(new, later, "3.00")], later)
        kwh = [e["detail"]["kwh"] for e in agent.store.ledger("A1") if e["kind"] == "charge"]
        assert kwh == ["10.00", "24.00", "3.00"]
    finally:
        agent.processing.shutdown()
        agent.store.close()


def test_a_technicians_swap_raises_no_setting_conflict_while_the_file_is_unchanged(
        tmp_path: Path) -> None:
    """The file still lists the old meter (nobody edited it yet): the swap keeps it removed
    across SIGHUP, quietly; a conflict is news only when the file changes afterwards."""
    from edge_agent.runtime.daemon import Agent
    from edge_agent.runtime.operations import commission_through_agent

    old, new = "000000000007", "000000000008"
    agent = Agent(load_config(agent_config(tmp_path, "/dev/null", [old])))
    try:
        commission_through_agent(agent, {"action": "replace", "old": old, "new": new,
                                         "old_final_kwh": "0.00",
                                         "new_initial_kwh": "0.00"}, "technician:t")
        assert not any(n.startswith("refused") for n in agent.reload())
        assert [m.address for m in agent.store.meters()] == [new]
        assert agent.store.events(types=["setting_conflict"]) == []
    finally:
        agent.processing.shutdown()
        agent.store.close()


def test_a_meter_the_head_end_added_again_keeps_its_account_across_sighup(
        tmp_path: Path) -> None:
    """The file lists a meter for A1; the customer moves out and the head end removes the
    meter, then adds it again for the new customer B9.  A SIGHUP (or a restart) must not
    hand the meter back to A1 from the unchanged file: B9's consumption would be charged
    to A1."""
    from edge_agent.runtime.daemon import Agent
    from edge_agent.runtime.operations import Context, add_meter, remove_meter

    meter = "000000000007"
    path = agent_config(tmp_path, "/dev/null", [meter])
    agent = Agent(load_config(path))
    try:
        ctx = Context("headend:headend-1", "c-1", NOW)
        agent.on_processor(remove_meter(agent, {"meter": meter}, ctx).apply)
        agent.on_processor(add_meter(agent, {
            "meter": meter, "bus": "bus1", "account": "B9", "tariff": "flat",
            "initial_kwh": D("5.00")}, Context("headend:headend-1", "c-2", NOW)).apply)
        assert agent.store.meter(meter).account == "B9"
        assert not any(n.startswith("refused") for n in agent.reload())
        assert agent.store.meter(meter).account == "B9"
        assert agent.processor.billing[meter].account == "B9"
    finally:
        agent.processing.shutdown()
        agent.store.close()
    agent = Agent(load_config(path))  # a restart
    try:
        assert agent.store.meter(meter).account == "B9"
    finally:
        agent.processing.shutdown()
        agent.store.close()


def test_a_meter_added_again_the_same_day_pays_that_days_fixed_charge_once(
        tmp_path: Path) -> None:
    """Removed by mistake and commissioned again an hour later: the day's fixed charge
    (gw:daily:<meter>:<day>) was paid already; it is not charged a second time."""
    store, run, poll = _commission_and_bill(tmp_path, '[fixed]\ndaily = "0.10"\n')
    meter, add = METER_7, ADD_7
    run(add, NOW)
    poll("1", 1)
    run({"action": "remove", "address": meter}, NOW + timedelta(hours=2))
    run({**add, "initial_kwh": "1"}, NOW + timedelta(hours=3))
    poll("2", 4)
    fixed = [e["id"] for e in store.ledger("A7") if e["detail"].get("fixed") == "daily"]
    assert fixed == [f"gw:daily:{meter}:2026-11-23"]
    # out of service for two days, then back: nothing owed for the days it was out
    run({"action": "remove", "address": meter}, NOW + timedelta(hours=5))
    run({**add, "initial_kwh": "2"}, NOW + timedelta(days=3))
    poll("3", 73)
    fixed = [e["id"][-10:] for e in store.ledger("A7") if e["detail"].get("fixed") == "daily"]
    assert fixed == ["2026-11-23", "2026-11-26"]


@pytest.mark.parametrize("behind", ["000000000077", "000000000001", None])
def test_commission_add_behind_must_be_a_configured_total_meter(
        tmp_path: Path, behind: str | None) -> None:
    """`--behind` names a total meter of the configuration (a customer meter, an unknown one,
    or any without a configuration to check against is refused, nothing added)."""
    from edge_agent.errors import UnknownMeter

    extra = '[[meter]]\naddress = "000000000099"\nbus = "bus1"\nrole = "total"\n'
    config = load_config(agent_config(tmp_path, "/dev/null", ["000000000001"], extra=extra))
    store = Store(tmp_path / "agent.db")
    add = {"action": "add", "address": "000000000007", "bus": "bus1", "account": "A7",
           "tariff": "flat", "initial_kwh": "0"}
    with pytest.raises(UnknownMeter, match="is not a total meter"):
        commission(store, config if behind else None, TARIFFS if behind else None,
                   {**add, "behind": behind or "000000000099"}, "technician:t", NOW)
    assert store.meters(False) == []
    write, _ = commission(store, config, TARIFFS, {**add, "behind": "000000000099"},
                          "technician:t", NOW)
    with store.transaction():
        write()
    assert store.meter("000000000007").behind == "000000000099"
