"""Line loss of a transformer area (台区线损): supply at the total meter against the sum of sales.

rate = (supply - sum of sales) / supply, per 15 minutes, day and month.  A loss is only computed
from complete data: when the total meter's reading or any customer's is missing, the result
says `incomplete` with the count of missing customers and carries no loss or rate, so a partial
sum can never pass for a high loss (or hide a real one).  Complete results carry two flags: a
negative loss (sales above supply: a wiring, CT/PT multiplier or assignment error) and a rate
above the configured threshold (theft or a fault), each raising one event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge_agent.prepaid.records import Event

RATE_PLACES = Decimal("0.0001")
PERIODS = ("15min", "day", "month")


@dataclass(frozen=True)
class LineLoss:
    """One period of one area.  Energies are primary-side kWh (after CT/PT multipliers)."""

    area: str  # the total meter's address
    period: str  # 15min | day | month
    start: datetime
    end: datetime
    supply_kwh: Decimal | None
    sales_kwh: Decimal | None
    loss_kwh: Decimal | None
    rate: Decimal | None  # fraction, 4 places; None when incomplete or supply is zero
    customers: int
    missing: tuple[str, ...] = ()
    incomplete: bool = False
    negative: bool = False
    over_threshold: bool = False
    late: tuple[str, ...] = ()  # meters read too far from a boundary of the period (15min)
    reason: str | None = None  # why an incomplete period is incomplete

    @property
    def label(self) -> str:
        """The period in the area's local time: `2026-04-02`, `2026-04`, `2026-04-02T10:15`."""
        if self.period == "day":
            return self.start.date().isoformat()
        if self.period == "month":
            return self.start.strftime("%Y-%m")
        return self.start.strftime("%Y-%m-%dT%H:%M")

    def as_dict(self) -> dict[str, object]:
        """The `lineloss` message body (times in UTC with Z, as the MQTT contract wants)."""
        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {"area": self.area, "period": self.period, "label": self.label,
                "start": utc(self.start), "end": utc(self.end),
                "supply_kwh": text(self.supply_kwh),
                "sales_kwh": text(self.sales_kwh), "loss_kwh": text(self.loss_kwh),
                "rate": text(self.rate), "customers": self.customers,
                "missing": len(self.missing), "missing_meters": list(self.missing),
                "incomplete": self.incomplete, "negative": self.negative,
                "over_threshold": self.over_threshold,
                **({"reason": self.reason} if self.reason else {}),
                **({"late_meters": list(self.late)} if self.late else {})}


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def energy_between(first: Decimal | None, last: Decimal | None,
                   multiplier: int = 1) -> Decimal | None:
    """Energy a register counted between two readings, times the CT x PT multiplier; None
    when a reading is missing or the register went backwards (a bad read is not a sale)."""
    if first is None or last is None or last < first:
        return None
    return (last - first) * multiplier


def line_loss(area: str, period: str, start: datetime, end: datetime,
              supply_kwh: Decimal | None, sales: Mapping[str, Decimal | None],
              threshold: Decimal, late: Sequence[str] = (),
              late_limit: float | None = None) -> LineLoss:
    """The loss of one period from the total meter's energy and each customer's (None: not
    read).  Never computed from partial data: any None makes the result incomplete, and so
    does any meter in `late` (read more than `late_limit` seconds from a boundary of the
    period: its energy is not the period's)."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}, not {period!r}")
    missing = tuple(sorted(m for m, kwh in sales.items() if kwh is None))
    known = [kwh for kwh in sales.values() if kwh is not None]
    sold = sum(known, Decimal(0)) if not missing else None
    late = tuple(sorted(set(late)))
    if supply_kwh is None or missing or late:
        why = []
        if supply_kwh is None:
            why.append("total meter: no energy (not read, or its register went back)")
        if missing:
            why.append(f"{len(missing)} customer meter(s) not read")
        if late:
            limit = "" if late_limit is None else f" more than {late_limit:g} s"
            why.append(f"{len(late)} meter(s) read{limit} from the period's boundary")
        return LineLoss(area, period, start, end, supply_kwh, sold, None, None, len(sales),
                        missing, incomplete=True, late=late, reason="; ".join(why))
    loss = supply_kwh - sold  # type: ignore[operator]
    rate = (loss / supply_kwh).quantize(RATE_PLACES) if supply_kwh > 0 else None
    return LineLoss(area, period, start, end, supply_kwh, sold, loss, rate, len(sales),
                    negative=loss < 0, over_threshold=rate is not None and rate > threshold)


def loss_events(result: LineLoss) -> list[Event]:
    """`line_loss_negative` / `line_loss_high` for a complete period; nothing otherwise."""
    if result.incomplete:
        return []
    detail = result.as_dict()
    events = []
    if result.negative:
        events.append(Event("line_loss_negative", "warning", result.end, result.area, None,
                            detail))
    if result.over_threshold:
        events.append(Event("line_loss_high", "warning", result.end, result.area, None, detail))
    return events


def quarter_start(moment: datetime) -> datetime:
    """The start of the 15-minute period holding `moment`."""
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def day_window(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tz)
    return start, datetime.combine(day + timedelta(days=1), time(), tz)


def month_window(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return datetime.combine(first, time(), tz), datetime.combine(following, time(), tz)


def late_reads(boundary: datetime, read_at: Mapping[str, datetime], meters: Sequence[str],
               limit: float) -> list[str]:
    """Meters whose register for `boundary` was read more than `limit` seconds from it (a
    meter without a read time is not judged here: a missing read is `missing`)."""
    return [m for m in meters if m in read_at
            and abs((read_at[m] - boundary).total_seconds()) > limit]
