"""Enforcement: a pure function of (meter, balance, policy, now) -> relay decision and events.

Rules (docs/prepaid.md, "Enforcement"):
- credit exhausted (balance <= -overdraft): pre-trip alarm first, trip after the grace;
- never trip a keep-power meter, nor in a protected window (night hours, a holiday, the head
  end's no-cutoff flag): record `cutoff_deferred` once and trip when the window ends;
- a meter that did not answer in this cycle gets no decision at all;
- close (close-allowed or direct) once a top-up lifts the balance above the restore level;
- `guard` refuses every trip of a cycle that would trip more than the allowed share.
The daemon carries decisions out, confirms them from the status word, and only then stores the
new phase, so an unconfirmed action is decided again next cycle.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.prepaid.money import ZERO, format_money
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.records import Event
from edge_agent.prepaid.vocabulary import Phase

PHASES = tuple(Phase)
@dataclass(frozen=True, slots=True)
class MeterEnforcement:
    """What enforcement remembers of one meter."""

    meter: str
    account: str
    keep_power: bool = False
    phase: str = "normal"  # normal | alarmed | tripped
    alarm_since: datetime | None = None
    deferred: str | None = None  # reason of the cutoff_deferred already recorded
    cwt_raised: bool = False  # consumption_while_tripped already raised for this trip


@dataclass(frozen=True, slots=True)
class Decision:
    meter: str
    action: str | None  # trip | close_allowed | direct_close | alarm | alarm_release | None
    on_success: MeterEnforcement  # the state to store once the action is confirmed
    events: list[Event] = field(default_factory=list)
    reason: str = ""


def protection(policy: Policy, now: datetime, tz: ZoneInfo, keep_power: bool) -> str | None:
    """Why a trip must wait now, or None (this meter's reasons; see `gateway_hold`)."""
    if keep_power:
        return "keep_power"
    if policy.no_cutoff:
        return "no_cutoff"
    if policy.trips_need_force:
        return "force_required"  # hospital / VIP class: only an operator's forced trip
    local = now.astimezone(tz)
    if local.date() in policy.holidays:
        return "holiday"
    minute = local.hour * 60 + local.minute
    for start, end in policy.protected_hours:
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if inside:
            return "protected_hours"
    return None


def gateway_hold(policy: Policy, now: datetime, started_at: datetime | None,
                 headend_last_seen: datetime | None) -> str | None:
    """Why no meter may be tripped now, whatever its balance, or None.

    - `startup`: the agent started less than `startup_keep_power_minutes` ago; top-ups queued
      while it was down have not arrived yet, and the relays' state is not yet confirmed.
    - `headend_unreachable`: nothing heard from the head end for `offline_enforcement_hours`;
      a customer who pays now cannot be restored, so no new trips.  A gateway that has never
      heard from a head end (none configured) enforces as before.
    """
    if (started_at is not None and policy.startup_keep_power_minutes
            and now - started_at < timedelta(minutes=policy.startup_keep_power_minutes)):
        return "startup"
    if (headend_last_seen is not None and policy.offline_enforcement_hours
            and now - headend_last_seen >= timedelta(hours=policy.offline_enforcement_hours)):
        return "headend_unreachable"
    return None


def trip_hold(policy: Policy, now: datetime, tz: ZoneInfo, keep_power: bool,
              hold: str | None) -> str | None:
    """Every reason a trip must wait: the meter's protections, then the gateway's hold."""
    return protection(policy, now, tz, keep_power) or hold


def decide(state: MeterEnforcement, balance: Decimal, policy: Policy, now: datetime,
           tz: ZoneInfo, online: bool = True, consumed_kwh: Decimal = ZERO,
           hold: str | None = None, restored_at: datetime | None = None) -> Decision:
    """The relay decision for one meter in this cycle.

    `consumed_kwh` is the energy the register gained since the trip was confirmed (not the
    energy billed this interval, which was partly used before the trip); `restored_at` is
    when the relay was last restored, for the hold-off; `hold` is a gateway-wide reason to
    defer trips (offline horizon, start-up window).
    """
    events: list[Event] = []

    def event(kind: str, severity: str, **detail: Any) -> None:
        detail.setdefault("balance", format_money(balance))
        events.append(Event(kind, severity, now, state.meter, state.account, detail))

    if not online:
        return Decision(state.meter, None, state, [], "meter offline: no decision")
    owed = balance <= policy.cutoff_level
    if state.phase == "manual":
        # Tripped by the head end or a technician: the policy neither closes it nor trips it
        # again; only an operator's close ends this phase.
        if consumed_kwh > 0 and not state.cwt_raised:
            event("consumption_while_tripped", "critical", kwh=str(consumed_kwh))
            state = replace(state, cwt_raised=True)
        return Decision(state.meter, None, state, events, "relay held open by an operator")
    if state.phase == "tripped":
        if consumed_kwh > 0 and not state.cwt_raised:
            event("consumption_while_tripped", "critical", kwh=str(consumed_kwh))
            state = replace(state, cwt_raised=True)
        if balance > policy.restore_level:
            return Decision(state.meter, policy.close_mode,
                            replace(state, phase="normal", alarm_since=None, deferred=None,
                                    cwt_raised=False), events, "balance restored")
        return Decision(state.meter, None, state, events)
    if not owed:
        if state.phase == "alarmed":
            return Decision(state.meter, "alarm_release",
                            replace(state, phase="normal", alarm_since=None, deferred=None),
                            events, "balance restored")
        return Decision(state.meter, None, state, events)
    if in_holdoff(balance, policy, now, restored_at):
        return Decision(state.meter, None, state, events, "hold-off after restore")
    if state.phase == "normal":
        event("credit_exhausted", "warning", cutoff_level=format_money(policy.cutoff_level))
        return Decision(state.meter, "alarm",
                        replace(state, phase="alarmed", alarm_since=now), events,
                        "credit exhausted: pre-trip alarm")
    since = state.alarm_since or now
    if now - since < policy.alarm_grace:
        return Decision(state.meter, None, state, events, "within alarm grace")
    reason = trip_hold(policy, now, tz, state.keep_power, hold)
    if reason is not None:
        if state.deferred != reason:
            event("cutoff_deferred", "info", reason=reason)
            state = replace(state, deferred=reason)
        return Decision(state.meter, None, state, events, f"cutoff deferred: {reason}")
    return Decision(state.meter, "trip",
                    replace(state, phase="tripped", deferred=None, cwt_raised=False), events,
                    "credit exhausted after grace")


def in_holdoff(balance: Decimal, policy: Policy, now: datetime,
               restored_at: datetime | None) -> bool:
    """Within the hold-off after a restore, and not below the cutoff by more than the margin:
    a small charge right after a top-up must not trip the meter again (a flap)."""
    if restored_at is None or now - restored_at >= policy.restore_holdoff:
        return False
    return balance > policy.cutoff_level - policy.holdoff_margin


def guard(decisions: list[Decision], meter_count: int, policy: Policy,
          now: datetime) -> tuple[list[Decision], list[Event]]:
    """Refuse every trip of a cycle that would trip more than the allowed share of meters."""
    trips = [d for d in decisions if d.action == "trip"]
    limit = max(policy.trip_guard_min, math.ceil(policy.max_trip_share * meter_count))
    if len(trips) <= limit:
        return decisions, []
    held = [
        replace(d, action=None, on_success=d.on_success, reason="trip guard") if
        d.action == "trip" else d for d in decisions
    ]
    # A held trip keeps the meter alarmed (its previous state), so it is decided again.
    held = [
        replace(d, on_success=replace(d.on_success, phase="alarmed")) if d.reason ==
        "trip guard" else d for d in held
    ]
    event = Event("trip_guard", "critical", now, None, None,
                  {"trips_wanted": len(trips), "limit": limit, "meters": meter_count,
                   "held": sorted(d.meter for d in trips)})
    return held, [event]


@functools.lru_cache(maxsize=16)
def _level_keys(levels: tuple[Decimal, ...]) -> tuple[tuple[Decimal, str], ...]:
    return tuple((level, format_money(level)) for level in levels)


@dataclass(frozen=True, slots=True)
class AlertState:
    """Alert levels already announced for an account (re-armed when the balance recovers)."""

    levels: frozenset[str] = frozenset()
    days: bool = False


def check_alerts(account: str, state: AlertState, balance: Decimal,
                 daily_cost: Decimal | None, policy: Policy,
                 now: datetime) -> tuple[AlertState, list[Event]]:
    """Low-balance alerts, each raised once per downward crossing."""
    events: list[Event] = []
    levels = set(state.levels)
    for level, key in _level_keys(policy.alert_levels):
        if balance <= level and key not in levels:
            levels.add(key)
            events.append(Event("low_balance", "warning", now, None, account,
                                {"balance": format_money(balance), "level": key}))
        elif balance > level:
            levels.discard(key)
    days = state.days
    if daily_cost and daily_cost > 0 and policy.alert_days_left > 0:
        low = balance <= policy.alert_days_left * daily_cost  # days left <= threshold
        if low and not days:
            days = True
            left = balance / daily_cost
            events.append(Event("low_balance", "warning", now, None, account, {
                "balance": format_money(balance),
                "days_left": str(left.quantize(Decimal("0.1"))),
                "daily_cost": format_money(daily_cost.quantize(Decimal("0.000001")))}))
        elif not low:
            days = False
    if days == state.days and levels == state.levels:
        return state, events  # unchanged: the caller need not store anything
    return AlertState(frozenset(levels), days), events
