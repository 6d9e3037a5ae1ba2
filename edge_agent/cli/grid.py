"""The concentrator's book of record, for people: line loss, a customer's daily usage, and the
meters as GeoJSON for a technician's map app (`edge-agent map`, the same as
`edge-agent meters --geojson`)."""

from __future__ import annotations

from typing import Any

import click

from .output import table
from .root import emit, json_option, main
from .state import db_option, geojson, open_store


@main.command()
@click.option("--period", type=click.Choice(["day", "month", "15min"]), default="day",
              show_default=True)
@click.option("--area", default=None, help="A total meter's address (default: every area).")
@click.option("--limit", default=14, show_default=True, help="Periods to show.")
@db_option
@json_option
def lineloss(period: str, area: str | None, limit: int, db_path: str | None,
             as_json: bool) -> None:
    """Line loss (台区线损) per area: supply, sales, loss, rate and flags, newest first."""
    rows = open_store(db_path).line_losses(period, area, limit)

    def human() -> None:
        shown = [{**r, "rate": "incomplete" if r["incomplete"] else _percent(r["rate"]),
                  "flags": ",".join(f for f in ("negative", "over_threshold") if r[f]),
                  "missing": r["missing"] or ""} for r in rows]
        table(shown, ["area", "label", "supply_kwh", "sales_kwh", "loss_kwh", "rate",
                       "missing", "flags"])

    emit(rows, as_json, human)


def _percent(rate: str | None) -> str:
    return "-" if rate is None else f"{float(rate) * 100:.2f}%"


@main.command()
@click.argument("account")
@click.option("--days", default=31, show_default=True, help="Days to show.")
@db_option
@json_option
def usage(account: str, days: int, db_path: str | None, as_json: bool) -> None:
    """A customer's daily history: kWh per rate, cost, tier position, allowance used."""
    rows = open_store(db_path).usage(account, days)

    def human() -> None:
        shown = [{"day": r["day"], "meter": _meters(r), "kwh": r["kwh"], "cost": r["cost"],
                  **{k: v for k, v in r["rates"].items()},
                  "tier": _tiers(r)} for r in rows]
        table(shown, ["day", "meter", "kwh", "sharp", "peak", "flat", "valley", "cost",
                       "tier"])

    emit(rows, as_json, human)


def _meters(row: dict[str, Any]) -> str:
    """The meter of an account's day, or its meters (several: one record sums them)."""
    parts = row.get("meters") or ()
    return ", ".join(m["meter"] for m in parts) if len(parts) > 1 else str(row["meter"])


def _tiers(row: dict[str, Any]) -> str:
    """The tier position of an account's day: its meter's, or each meter's (counted apart)."""
    parts = row.get("meters") or ()
    if len(parts) <= 1:
        return _tier(row["tier"])
    return "; ".join(f"{m['meter']}: {_tier(m['tier'])}" for m in parts if m.get("tier"))


def _tier(tier: dict[str, Any] | None) -> str:
    if not tier:
        return ""
    left = tier["block_remaining"]
    return f"block {tier['block']}" + (f", {left} kWh left" if left is not None else "")


@main.command("map")
@db_option
def map_(db_path: str | None) -> None:
    """Meters with a location as GeoJSON (the same as `meters --geojson`)."""
    emit(geojson(open_store(db_path)), True)
