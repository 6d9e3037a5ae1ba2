"""One relay vocabulary (issue 9 point 2): one mapping from operator orders to meter actions,
and every meter action has its DL/T 645 wire code and its confirmation."""

from __future__ import annotations

import pytest

from edge_agent.field.dlt645 import RELAY_CONFIRM
from edge_agent.prepaid.vocabulary import (
    ACTION_CHOICES,
    MeterAction,
    RelayOrder,
    meter_action,
    parse_action,
)
from protocols.dlt645 import messages


def test_every_meter_action_has_a_wire_code_and_a_confirmation() -> None:
    for action in MeterAction:
        assert action in messages.RELAY_ACTIONS
        assert action in RELAY_CONFIRM


def test_orders_map_to_meter_actions() -> None:
    assert meter_action(RelayOrder.TRIP) is MeterAction.TRIP
    assert meter_action("close") is MeterAction.CLOSE_ALLOWED
    assert meter_action("close", "direct_close") is MeterAction.DIRECT_CLOSE
    assert meter_action("keep_power_on") is MeterAction.KEEP_POWER
    assert meter_action("keep_power_off") is MeterAction.KEEP_POWER_RELEASE
    with pytest.raises(ValueError):
        meter_action("alarm")  # not an operator order


def test_technician_names_parse() -> None:
    assert parse_action("close") is MeterAction.CLOSE_ALLOWED
    assert parse_action("direct_close") is MeterAction.DIRECT_CLOSE
    assert parse_action("keep_power_on") is MeterAction.KEEP_POWER
    with pytest.raises(ValueError, match="one of"):
        parse_action("explode")
    assert set(ACTION_CHOICES) == {*MeterAction, *RelayOrder}
    assert MeterAction.TRIP == "trip"  # StrEnum: equal to its text in JSON and the database
