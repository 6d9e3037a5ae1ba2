"""When and how the concentrator sets meter clocks, and when it must not.

A broadcast time (0x08) reaches every meter on a bus at once, but meters accept it only within
a few minutes of their own clock and at most once a day, and a clock stepped across the hour or
midnight can skip or repeat a TOU switch or the daily freeze.  So: broadcast at a configured
time of day that is at least 5 minutes away from any hour and well away from midnight; set a
meter's clock on its own (0x14 to 04000101/04000102, where the meter allows it) when it is
still off after the broadcast; and sync nothing while the gateway's own clock is not
trustworthy (no NTP synchronisation yet), because then the gateway would spread its own error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

HOUR_MARGIN = timedelta(minutes=5)
MIDNIGHT_MARGIN = timedelta(minutes=30)
TRUST_MODES = ("auto", "trust", "distrust")


@dataclass(frozen=True)
class ClockPolicy:
    broadcast_at: time = time(14, 20)
    threshold: timedelta = timedelta(seconds=60)
    broadcast_limit: timedelta = timedelta(minutes=5)  # meters ignore a larger broadcast step
    trust: str = "auto"  # auto: the NTP state decides; trust / distrust: configured override


@dataclass(frozen=True)
class SyncPlan:
    broadcast: bool = False
    set_meters: tuple[str, ...] = ()
    refused: str = ""  # why nothing is synced (the gateway's clock is not trusted)
    ok_meters: tuple[str, ...] = field(default=())


def away_from_hour(moment: time | datetime, margin: timedelta = HOUR_MARGIN,
                   midnight: timedelta = MIDNIGHT_MARGIN) -> bool:
    """True when `moment` is more than `margin` from every hour and `midnight` from 00:00."""
    seconds = moment.hour * 3600 + moment.minute * 60 + moment.second
    into_hour = seconds % 3600
    if into_hour < margin.total_seconds() or 3600 - into_hour < margin.total_seconds():
        return False
    return min(seconds, 86400 - seconds) > midnight.total_seconds()


def gateway_trusted(mode: str, ntp_synchronized: bool | None) -> tuple[bool, str]:
    """(trusted, why not).  `auto` trusts the clock only when NTP says it is synchronised."""
    if mode not in TRUST_MODES:
        raise ValueError(f"clock trust must be one of {TRUST_MODES}, not {mode!r}")
    if mode == "trust":
        return True, ""
    if mode == "distrust":
        return False, "the configuration says the gateway clock is not to be trusted"
    if ntp_synchronized:
        return True, ""
    if ntp_synchronized is None:
        return False, "the gateway cannot tell whether its clock is NTP-synchronised"
    return False, "the gateway clock is not NTP-synchronised yet"


def plan_sync(deviations: Mapping[str, timedelta], now: datetime, trusted: tuple[bool, str],
              broadcast_done_today: bool, policy: ClockPolicy = ClockPolicy()) -> SyncPlan:
    """What to do for meters whose clock deviation (meter minus gateway) was just read.

    Broadcast once a day, only inside the safe window, when some meter is off by more than the
    threshold but within what a broadcast may correct; meters beyond that, or still off after
    today's broadcast, are set one by one (also only in a safe moment)."""
    if not trusted[0]:
        return SyncPlan(refused=trusted[1])
    off = {m: d for m, d in deviations.items() if abs(d) > policy.threshold}
    ok = tuple(sorted(set(deviations) - set(off)))
    if not off or not away_from_hour(now):
        return SyncPlan(ok_meters=ok)
    small = {m for m, d in off.items() if abs(d) <= policy.broadcast_limit}
    if small and not broadcast_done_today:
        return SyncPlan(True, tuple(sorted(set(off) - small)), ok_meters=ok)
    return SyncPlan(False, tuple(sorted(off)), ok_meters=ok)
