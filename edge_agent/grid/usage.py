"""A customer's day, as the head end's app and SMS reminders show it: one record per account
and day, summing the account's meters (an account may have several).

kWh per rate from the meter's own freezes (the day the meter saw, not the gateway's polling
times), the day's cost from the ledger, the position in the tier block (used and remaining in the
current block and tier period) and the free allowance used this month.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from edge_agent.grid.backfill import FrozenDay
from edge_agent.prepaid.money import format_money
from edge_agent.prepaid.records import MeterBilling
from edge_agent.prepaid.tariff import Tariff

RATE_NAMES = ("sharp", "peak", "flat", "valley")  # DL/T 645 rates 1..4 (尖峰平谷)


def tier_position(state: MeterBilling, tariff: Tariff) -> dict[str, object] | None:
    """Block number (1-based), used and remaining in it, for the tier period billed last."""
    if not tariff.period:
        return None
    blocks = tariff.blocks or next((s.blocks for s in tariff.seasons
                                    if state.tier.period.startswith(s.name)), ())
    used, floor = state.tier.used, Decimal(0)
    for number, block in enumerate(blocks, 1):
        if block.up_to is None or used < block.up_to:
            remaining = None if block.up_to is None else block.up_to - used
            return {"period": state.tier.period, "block": number, "period_used": str(used),
                    "block_used": str(used - floor), "block_remaining":
                    None if remaining is None else str(remaining), "price": str(block.price)}
        floor = block.up_to
    return None


def meter_usage(start: FrozenDay, end: FrozenDay, state: MeterBilling,
                tariff: Tariff) -> dict[str, object]:
    """One meter's part of an account's day (freezes closing day-1 and day): kWh, kWh per
    rate (empty when a freeze has no rate registers), its tariff, and its own tier position and
    allowance (tier blocks and the free allowance are counted per meter, in its billing
    state)."""
    kwh = (end.forward[0] - start.forward[0]) * state.multiplier
    rates = {}
    if len(start.forward) >= 5 and len(end.forward) >= 5:
        rates = {name: str((end.forward[i] - start.forward[i]) * state.multiplier)
                 for i, name in enumerate(RATE_NAMES, 1)}
    return {"meter": state.meter, "kwh": str(kwh), "rates": rates, "tariff": tariff.id,
            "tier": tier_position(state, tariff),
            "allowance": {"month": state.allowance_state.month,
                          "used_kwh": str(state.allowance_state.used),
                          "total_kwh": str(tariff.allowance_kwh)}
            if tariff.allowance_kwh else None}


def account_usage(day: date, account: str, meters: list[dict[str, object]], cost: Decimal,
                  missing: Iterable[str] = ()) -> dict[str, object]:
    """The usage message of one account for `day`: the kWh of its meters summed (per rate
    when every meter has rate registers), the account's cost of the day (its ledger charges,
    every meter's), and `meters`, each meter's part.  `meter`, `tier` and `allowance` at the
    top are the meter's when the day has one (the body of an account with one meter is what it
    always was); with several they are null (each meter's position is in `meters`: blocks
    and allowances are counted per meter).  `tariff` is the meters' tariff when they share one,
    else null.  `missing_meters`: the account's billed meters without both freezes of the day
    (not in the sums; a later backfill changes the day, which is sent again)."""
    parts = sorted(meters, key=lambda m: str(m["meter"]))
    kwh = sum((Decimal(str(m["kwh"])) for m in parts), Decimal(0))
    rates: dict[str, str] = {}
    if parts and all(m["rates"] for m in parts):
        rates = {name: str(sum((Decimal(m["rates"][name]) for m in parts),  # type: ignore[index]
                               Decimal(0))) for name in RATE_NAMES}
    single = parts[0] if len(parts) == 1 else None
    tariffs = {m["tariff"] for m in parts}
    return {"account": account, "meter": single["meter"] if single else None,
            "day": day.isoformat(), "kwh": str(kwh), "rates": rates,
            "cost": format_money(cost), "tariff": tariffs.pop() if len(tariffs) == 1 else None,
            "tier": single["tier"] if single else None,
            "allowance": single["allowance"] if single else None,
            "meters": parts, "missing_meters": sorted(missing)}
