"""The cut-off policy: thresholds, grace, protected windows, the trip guard's limits.

`parse_policy` validates a `[policy]` table (configuration, a policy file for `bill replay`, or
a head-end `set_policy`) and names every wrong key; the rest of `prepaid/` only reads `Policy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.prepaid.money import ZERO, parse_decimal
from edge_agent.prepaid.vocabulary import CLOSE_MODES


@dataclass(frozen=True)
class Policy:
    alert_levels: tuple[Decimal, ...] = (Decimal("20"), Decimal("5"))
    alert_days_left: Decimal = Decimal(3)
    usage_window_days: int = 7
    overdraft: Decimal = ZERO
    restore_level: Decimal = ZERO
    alarm_grace: timedelta = timedelta(minutes=30)
    close_mode: str = "close_allowed"
    protected_hours: tuple[tuple[int, int], ...] = ()  # (start minute, end minute), local
    holidays: frozenset[date] = frozenset()
    no_cutoff: bool = False
    max_trip_share: Decimal = Decimal("0.10")
    trip_guard_min: int = 3
    relay_confirm_attempts: int = 3
    relay_backoff: float = 1.0
    # After a restore the meter is not tripped (nor alarmed) again for this long, unless the
    # balance is below the cutoff by more than `holdoff_margin`: no flap on a small charge.
    restore_holdoff: timedelta = timedelta(minutes=15)
    holdoff_margin: Decimal = Decimal(5)
    trips_need_force: bool = False  # hospital / VIP: the policy never trips, an operator may
    offline_enforcement_hours: int = 24  # 0: trip however long the head end is silent
    startup_keep_power_minutes: int = 0  # no policy trips this long after the agent starts
    classes: tuple[tuple[str, Policy], ...] = ()  # named policies (defaults overridden)

    @property
    def cutoff_level(self) -> Decimal:
        return -self.overdraft

    def for_class(self, name: str | None) -> Policy:
        """The policy of an account's class; the default for None or a class since removed
        (an account is never left without a policy)."""
        if name is None:
            return self
        for class_name, policy in self.classes:
            if class_name == name:
                return policy
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.classes)


POLICY_KEYS = {
    "alert_levels", "alert_days_left", "usage_window_days", "overdraft", "restore_level",
    "alarm_grace_minutes", "close_mode", "protected_hours", "holidays", "no_cutoff",
    "max_trip_share", "trip_guard_min", "relay_confirm_attempts", "relay_backoff_seconds",
    "trips_need_force", "offline_enforcement_hours", "startup_keep_power_minutes", "classes",
    "restore_holdoff_minutes", "holdoff_margin",
}
# Settings of the whole gateway, not of a customer: a class may not change them.
GATEWAY_KEYS = {"max_trip_share", "trip_guard_min", "relay_confirm_attempts",
                "relay_backoff_seconds", "offline_enforcement_hours",
                "startup_keep_power_minutes", "classes"}
CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_policy(raw: dict[str, Any], where: str = "[policy]") -> Policy:
    """Validate a policy table; `ConfigError` names every wrong key."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key in raw:
        if key not in POLICY_KEYS:
            problems.append(f"{where}: unknown key {key!r}")

    def money(key: str, minimum: Decimal | None = ZERO) -> None:
        if key in raw:
            try:
                value = parse_decimal(raw[key], key, places=4)
                if minimum is not None and value < minimum:
                    raise ValueError(f"{key} must be at least {minimum}")
                out[key] = value
            except ValueError as exc:
                problems.append(f"{where}.{key}: {exc}")

    def integer(key: str, target: str, low: int, high: int) -> None:
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                problems.append(f"{where}.{key}: {value!r} must be a whole number {low}..{high}")
            else:
                out[target] = value

    money("overdraft")
    money("restore_level", minimum=None)
    money("alert_days_left")
    money("holdoff_margin")
    if "alert_levels" in raw:
        levels = []
        for index, level in enumerate(raw["alert_levels"] if isinstance(
                raw["alert_levels"], list) else [None]):
            try:
                levels.append(parse_decimal(level, "alert level", places=4))
            except ValueError as exc:
                problems.append(f"{where}.alert_levels[{index}]: {exc}")
        out["alert_levels"] = tuple(sorted(levels, reverse=True))
    integer("usage_window_days", "usage_window_days", 1, 90)
    integer("offline_enforcement_hours", "offline_enforcement_hours", 0, 24 * 365)
    integer("startup_keep_power_minutes", "startup_keep_power_minutes", 0, 24 * 60)
    integer("trip_guard_min", "trip_guard_min", 0, 100000)
    integer("relay_confirm_attempts", "relay_confirm_attempts", 1, 20)
    if "restore_holdoff_minutes" in raw:
        value = raw["restore_holdoff_minutes"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1440:
            problems.append(f"{where}.restore_holdoff_minutes: {value!r} must be a whole "
                            "number 0..1440")
        else:
            out["restore_holdoff"] = timedelta(minutes=value)
    if "alarm_grace_minutes" in raw:
        value = raw["alarm_grace_minutes"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{where}.alarm_grace_minutes: {value!r} must be a whole number "
                            ">= 0 (negative grace is impossible)")
        else:
            out["alarm_grace"] = timedelta(minutes=value)
    if "relay_backoff_seconds" in raw:
        value = raw["relay_backoff_seconds"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 60:
            problems.append(f"{where}.relay_backoff_seconds: {value!r} must be 0..60")
        else:
            out["relay_backoff"] = float(value)
    if "close_mode" in raw:
        if raw["close_mode"] not in CLOSE_MODES:
            problems.append(f"{where}.close_mode: {raw['close_mode']!r} is not one of "
                            f"{', '.join(CLOSE_MODES)}")
        else:
            out["close_mode"] = raw["close_mode"]
    for flag in ("no_cutoff", "trips_need_force"):
        if flag in raw:
            if not isinstance(raw[flag], bool):
                problems.append(f"{where}.{flag}: must be true or false")
            else:
                out[flag] = raw[flag]
    if "max_trip_share" in raw:
        try:
            share = parse_decimal(raw["max_trip_share"], "max_trip_share")
            if not ZERO < share <= 1:
                raise ValueError("max_trip_share must be in (0, 1]")
            out["max_trip_share"] = share
        except ValueError as exc:
            problems.append(f"{where}.max_trip_share: {exc}")
    if "protected_hours" in raw:
        windows = []
        for index, text in enumerate(raw["protected_hours"]):
            try:
                start, end = (_minutes(p) for p in str(text).split("-"))
            except ValueError:
                problems.append(f"{where}.protected_hours[{index}]: {text!r} is not HH:MM-HH:MM")
                continue
            if start == end:
                # Empty or the whole day?  Either reading surprises someone: refuse it, and
                # name the setting that protects all day.
                problems.append(f"{where}.protected_hours[{index}]: {text!r} starts and ends "
                                "at the same time (to protect all day use no_cutoff = true)")
                continue
            windows.append((start, end))
        out["protected_hours"] = tuple(windows)
    if "holidays" in raw:
        days = set()
        for index, text in enumerate(raw["holidays"]):
            try:
                days.add(date.fromisoformat(str(text)))
            except ValueError:
                problems.append(f"{where}.holidays[{index}]: {text!r} is not a date YYYY-MM-DD")
        out["holidays"] = frozenset(days)
    if "classes" in raw:
        out["classes"] = _classes(raw, where, problems)
    policy = Policy(**out)
    if policy.restore_level < policy.cutoff_level:
        problems.append(f"{where}.restore_level: {policy.restore_level} is below the cutoff "
                        f"level {policy.cutoff_level} (-overdraft)")
    if problems:
        raise ConfigError("; ".join(problems))
    return policy


def _classes(raw: dict[str, Any], where: str,
             problems: list[str]) -> tuple[tuple[str, Policy], ...]:
    """`[policy.classes.NAME]`: each class is the default policy with its own keys on top."""
    table = raw["classes"]
    if not isinstance(table, dict):
        problems.append(f"{where}.classes: must be a table of [policy.classes.NAME] tables")
        return ()
    base = {k: v for k, v in raw.items() if k != "classes"}
    out = []
    for name, overrides in table.items():
        here = f"{where}.classes.{name}"
        if not CLASS_NAME.fullmatch(name):
            problems.append(f"{here}: a class name is 1-32 letters, digits, '_' or '-'")
            continue
        if not isinstance(overrides, dict):
            problems.append(f"{here}: must be a table of policy settings")
            continue
        for key in sorted(overrides.keys() & GATEWAY_KEYS):
            problems.append(f"{here}.{key}: a setting of the whole gateway, not of a class")
        try:
            out.append((name, parse_policy({**base, **{k: v for k, v in overrides.items()
                                                        if k not in GATEWAY_KEYS}}, here)))
        except ConfigError as exc:
            problems.append(str(exc))
    return tuple(out)


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    value = int(hours) * 60 + int(minutes)
    if not (0 <= int(minutes) < 60 and 0 <= value <= 1440):
        raise ValueError(text)
    return value


