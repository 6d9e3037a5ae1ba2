"""Anomaly rules of a concentrator, each a small pure function with its threshold as an argument.

Defaults follow State Grid practice: a register running too fast (飞走) when it advanced more
than 10x what the measured power over the interval allows; stopped (停走) while power flows when
0.1 kWh or more was expected and the register did not move; a meter clock more than 60 s off; a
read failure streak of 3 cycles; any change of a running status word, reported bit by bit with
the bit's name; meter cover / terminal cover openings (DL/T 645-2007 03300D00 / 03300E00).
Each function returns the `Event`s to raise (or an updated state and events), so the caller
decides where they are stored and the rule raises each condition once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from edge_agent.prepaid.records import Event


@dataclass(frozen=True)
class Thresholds:
    fast_factor: Decimal = Decimal(10)  # register too fast: > factor x power x time
    fast_floor_kwh: Decimal = Decimal("0.02")  # below this a register step is resolution
    stopped_kwh: Decimal = Decimal("0.1")  # register stopped: this much expected, none counted
    clock_seconds: int = 60  # clock deviation
    failure_streak: int = 3  # read failures in a row


def _hours(start: datetime, end: datetime) -> Decimal:
    return Decimal((end - start) // timedelta(microseconds=1)) / Decimal(3_600_000_000)


def register_rate(meter: str, start: datetime, end: datetime, kwh_start: Decimal,
                  kwh_end: Decimal, power_kw: Decimal, th: Thresholds = Thresholds(),
                  multiplier: int = 1, power_min_kw: Decimal | None = None) -> list[Event]:
    """Too fast (飞走) or stopped (停走), from two register readings and the active power
    measured at both ends (kW, secondary side like the register): too fast is judged against
    the higher power (`power_kw`), stopped against the lower (`power_min_kw`, default the
    same), so a load switched on or off between the readings raises neither."""
    if end <= start or kwh_end < kwh_start:
        return []  # a decrease is billing's `register_decrease`
    counted = kwh_end - kwh_start
    hours = _hours(start, end)
    expected = max(power_kw, Decimal(0)) * hours
    low = max(power_kw if power_min_kw is None else power_min_kw, Decimal(0)) * hours
    detail = {"from": start.isoformat(), "to": end.isoformat(), "kwh": str(counted * multiplier),
              "expected_kwh": str((expected * multiplier).quantize(Decimal("0.001"))),
              "power_kw": str(power_kw)}
    if counted > th.fast_floor_kwh and counted > th.fast_factor * expected:
        return [Event("register_too_fast", "warning", end, meter, None, detail)]
    if counted == 0 and low >= th.stopped_kwh:
        return [Event("register_stopped", "warning", end, meter, None, detail)]
    return []


def clock_deviation(meter: str, meter_time: datetime, gateway_time: datetime, raised: bool,
                    th: Thresholds = Thresholds()) -> tuple[bool, list[Event]]:
    """(still raised, events): `clock_deviation` once when the meter goes beyond the threshold,
    `clock_ok` once when it is back within it; nothing while nothing changes."""
    off = (meter_time - gateway_time).total_seconds()
    beyond = abs(off) > th.clock_seconds
    if beyond == raised:
        return raised, []
    if beyond:
        return True, [Event("clock_deviation", "warning", gateway_time, meter, None,
                            {"seconds": round(off), "meter_time": meter_time.isoformat()})]
    return False, [Event("clock_ok", "info", gateway_time, meter, None, {"seconds": round(off)})]


def read_failures(meter: str, streak: int, ok: bool, now: datetime,
                  th: Thresholds = Thresholds()) -> tuple[int, list[Event]]:
    """(new streak, events): `read_failures` once when the streak reaches the threshold."""
    if ok:
        return 0, []
    streak += 1
    if streak == th.failure_streak:
        return streak, [Event("read_failures", "warning", now, meter, None, {"streak": streak})]
    return streak, []


# DL/T 645-2007 appendix: running status words (电表运行状态字), bit -> name.  Bits not named
# here are reported as `bit<n>`.
STATUS_BITS: dict[int, dict[int, str]] = {
    1: {1: "demand_sliding", 2: "clock_battery_low", 3: "reading_battery_low",
        4: "active_power_reverse", 5: "reactive_power_reverse"},
    3: {0: "second_timetable", 1: "aux_power_supply", 2: "battery_supply",
        3: "programming_allowed", 4: "relay_open", 5: "second_time_zone",
        6: "relay_command_open", 7: "pretrip_alarm", 8: "prepaid_energy", 9: "prepaid_money",
        10: "second_rate_schedule", 11: "second_tier_schedule", 12: "keep_power"},
}


def status_changes(meter: str, word: int, before: int, after: int,
                   now: datetime) -> list[Event]:
    """One `status_change` event per bit of status word `word` that changed, named."""
    names = STATUS_BITS.get(word, {})
    events = []
    for bit in range(16):
        mask = 1 << bit
        if (before ^ after) & mask:
            events.append(Event("status_change", "info", now, meter, None,
                                {"word": word, "bit": bit, "name": names.get(bit, f"bit{bit}"),
                                 "value": int(bool(after & mask))}))
    return events


COVER_COUNTERS = {"cover_open_count": "03300D00", "terminal_cover_open_count": "03300E00"}


def cover_openings(meter: str, name: str, before: int | None, after: int,
                   now: datetime) -> list[Event]:
    """`cover_opened` when a meter or terminal cover counter went up (first sight: nothing)."""
    if before is None or after <= before:
        return []
    return [Event("cover_opened", "critical", now, meter, None,
                  {"counter": name, "di": COVER_COUNTERS.get(name, ""), "from": before,
                   "to": after})]
