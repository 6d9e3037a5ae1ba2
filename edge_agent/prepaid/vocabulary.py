"""One vocabulary per concept: relay actions and orders, phases, ledger kinds, severities.

One relay vocabulary: what a meter's relay can be told, and what an operator can order.

`MeterAction` is what goes on the wire (`protocols.dlt645.messages.RELAY_ACTIONS` holds the
DL/T 645 codes); enforcement decides in these terms.  `RelayOrder` is what the head end and a
technician ask for; `meter_action` is the ONE mapping from an order to a meter action (a close
follows the policy's `close_mode`).  Both are `StrEnum`s, so they equal their text in JSON,
the database and event details.  The head end, the control socket, the processor, the
drivers and the CLI import these instead of keeping their own lists.
"""

from __future__ import annotations

from enum import StrEnum


class MeterAction(StrEnum):
    TRIP = "trip"
    CLOSE_ALLOWED = "close_allowed"  # the customer (or the meter) closes it: DL/T 645 1B
    DIRECT_CLOSE = "direct_close"
    ALARM = "alarm"  # pre-trip alarm
    ALARM_RELEASE = "alarm_release"
    KEEP_POWER = "keep_power"
    KEEP_POWER_RELEASE = "keep_power_release"


class RelayOrder(StrEnum):
    TRIP = "trip"
    CLOSE = "close"
    KEEP_POWER_ON = "keep_power_on"
    KEEP_POWER_OFF = "keep_power_off"


CLOSE_MODES = (MeterAction.CLOSE_ALLOWED, MeterAction.DIRECT_CLOSE)
RESTORING = frozenset({MeterAction.CLOSE_ALLOWED, MeterAction.DIRECT_CLOSE,
                       MeterAction.ALARM_RELEASE})
ADVISORY = frozenset({MeterAction.ALARM, MeterAction.ALARM_RELEASE})  # many meters refuse it
RELAY_EVENTS = {MeterAction.TRIP: "relay_tripped", MeterAction.CLOSE_ALLOWED: "relay_closed",
                MeterAction.DIRECT_CLOSE: "relay_closed"}

_ORDER_ACTIONS = {RelayOrder.TRIP: MeterAction.TRIP,
                  RelayOrder.KEEP_POWER_ON: MeterAction.KEEP_POWER,
                  RelayOrder.KEEP_POWER_OFF: MeterAction.KEEP_POWER_RELEASE}


def meter_action(order: str, close_mode: str = MeterAction.CLOSE_ALLOWED) -> MeterAction:
    """The meter action that carries out an operator's order (ValueError if none)."""
    order = RelayOrder(order)
    if order is RelayOrder.CLOSE:
        return MeterAction(close_mode)
    return _ORDER_ACTIONS[order]


def order_for(action: str) -> RelayOrder | None:
    """The operator order a meter action carries out (None for the pre-trip alarm, which is
    the policy's own step): the inverse of `meter_action`, for a technician who types either."""
    if action in tuple(RelayOrder):
        return RelayOrder(action)
    try:
        meter = MeterAction(action)
    except ValueError:
        return None
    if meter in CLOSE_MODES:
        return RelayOrder.CLOSE
    return next((o for o, a in _ORDER_ACTIONS.items() if a is meter), None)


def parse_action(text: str, close_mode: str = MeterAction.CLOSE_ALLOWED) -> MeterAction:
    """A meter action given by its own name or by an order's name (`close`, `keep_power_on`):
    what a technician may type.  ValueError names the choices."""
    try:
        return MeterAction(text)
    except ValueError:
        pass
    try:
        return meter_action(text, close_mode)
    except ValueError:
        raise ValueError(f"unknown relay action {text!r}; one of "
                         f"{', '.join(ACTION_CHOICES)}") from None


ACTION_CHOICES = tuple(sorted({a.value for a in (*MeterAction, *RelayOrder)}))


class Phase(StrEnum):
    """Where enforcement has a meter."""

    NORMAL = "normal"
    ALARMED = "alarmed"
    TRIPPED = "tripped"
    MANUAL = "manual"  # an operator holds it open until an operator closes it


class LedgerKind(StrEnum):
    TOPUP = "topup"
    CHARGE = "charge"  # consumption (and daily fixed charges)
    ALLOWANCE = "allowance"  # free kWh credited
    ADJUSTMENT = "adjustment"  # the head end's
    OPENING = "opening"  # balance at commissioning or migration


class Severity(StrEnum):
    """Of an event; journald priorities follow it (docs/deployment.md)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
