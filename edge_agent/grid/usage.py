"""A customer's day, as the head end's app and SMS reminders show it.

kWh per rate from the meter's own freezes (the day the meter saw, not the gateway's polling
times), the day's cost from the ledger, the position in the tier block (used and remaining in the
current block and tier period) and the free allowance used this month.
"""

from __future__ import annotations

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


def daily_usage(day: date, start: FrozenDay, end: FrozenDay, cost: Decimal,
                state: MeterBilling, tariff: Tariff) -> dict[str, object]:
    """The usage message of one account's meter for `day` (freezes closing day-1 and day)."""
    kwh = (end.forward[0] - start.forward[0]) * state.multiplier
    rates = {}
    if len(start.forward) >= 5 and len(end.forward) >= 5:
        rates = {name: str((end.forward[i] - start.forward[i]) * state.multiplier)
                 for i, name in enumerate(RATE_NAMES, 1)}
    return {"account": state.account, "meter": state.meter, "day": day.isoformat(),
            "kwh": str(kwh), "rates": rates, "cost": format_money(cost),
            "tariff": tariff.id, "tier": tier_position(state, tariff),
            "allowance": {"month": state.allowance_state.month,
                          "used_kwh": str(state.allowance_state.used),
                          "total_kwh": str(tariff.allowance_kwh)}
            if tariff.allowance_kwh else None}
