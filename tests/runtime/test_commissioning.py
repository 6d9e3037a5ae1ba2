"""`commission add|replace|remove` checks (runtime/operations.py), on a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import Conflict, Malformed, RegisterMapError, UnknownBus, UnknownTariff
from edge_agent.runtime.operations import commission
from edge_agent.store import Store
from tests.helpers import agent_config

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TARIFFS = {"flat"}


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
