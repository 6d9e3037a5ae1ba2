"""The records prepaid rules work on: readings in, ledger entries and events out.

Plain frozen dataclasses, shared by `field/` (which produces `Poll`s), `prepaid/` (which
decides) and `store/` (which keeps them), so none of those needs to import another's logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from edge_agent.prepaid.tariff import AllowanceState, TierState


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change; `amount` is signed (charges are negative)."""

    id: str
    account: str
    kind: str  # topup | charge | allowance | adjustment | opening | daily
    amount: Decimal
    ts: datetime
    meter: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    severity: str
    ts: datetime
    meter: str | None = None
    account: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MeterBilling:
    """What billing remembers of one meter between readings."""

    meter: str
    account: str
    tariff: str
    multiplier: int = 1
    allowance: bool = False
    commissioned_at: datetime | None = None
    last_kwh: Decimal | None = None
    last_rates: tuple[Decimal, ...] | None = None
    last_ts: datetime | None = None
    charge_seq: int = 0
    tier: TierState = field(default_factory=TierState)
    allowance_state: AllowanceState = field(default_factory=AllowanceState)
    last_daily: date | None = None


@dataclass(frozen=True, slots=True)
class RegisterReading:
    meter: str
    ts: datetime
    kwh: Decimal  # total active energy register
    rates: tuple[Decimal, ...] | None = None  # rate 1..4 registers when the meter has them


@dataclass(frozen=True, slots=True)
class Poll:
    """What one meter gave in one cycle (`ok` False: it did not answer)."""

    meter: str
    ts: datetime
    ok: bool
    energy: RegisterReading | None = None
    values: list[tuple[str, str]] = field(default_factory=list)  # (name, value) to store
    relay: str | None = None  # "open"/"closed" from the status word, when read
    error: str = ""


