"""Tariffs: a validated TOML format and the exact pricing of one reading interval.

Pricing is a pure function.  The energy of an interval `[start, end)` is split at every
boundary that changes its price (a time-of-use window edge, the start of a tier period or a
season, a month for the free allowance), in proportion to time and in whole 0.01 kWh units
(largest remainder, so the parts add up exactly), and each part is priced.  A meter that has
per-rate registers gives its own time-of-use split instead.  See docs/tariffs.md.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.errors import TariffError
from edge_agent.prepaid.money import CENT_KWH, ZERO, parse_decimal

RATE_NAMES = ("sharp", "peak", "flat", "valley")  # DL/T 645 rate registers 1..4
KINDS = ("flat", "tou", "tiered")
PERIODS = ("month", "year", "season")
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    start: int  # minute of the day, local time
    end: int  # exclusive, 1440 for midnight
    rate: str


@dataclass(frozen=True)
class Block:
    up_to: Decimal | None  # cumulative kWh in the period; None for the last block
    price: Decimal


@dataclass(frozen=True)
class Season:
    name: str
    start: tuple[int, int]  # (month, day), inclusive
    end: tuple[int, int]  # (month, day), exclusive
    blocks: tuple[Block, ...]

    def contains(self, day: date) -> bool:
        md = (day.month, day.day)
        if self.start <= self.end:
            return self.start <= md < self.end
        return md >= self.start or md < self.end

    def key(self, day: date) -> str:
        year = day.year if (day.month, day.day) >= self.start else day.year - 1
        if self.start <= self.end:
            year = day.year
        return f"{self.name}:{year}"


@dataclass(frozen=True)
class Tariff:
    id: str
    kind: str
    price: Decimal | None = None
    prices: dict[str, Decimal] = field(default_factory=dict)
    windows: tuple[Window, ...] = ()
    use_registers: bool = True
    period: str | None = None
    blocks: tuple[Block, ...] = ()
    seasons: tuple[Season, ...] = ()
    allowance_kwh: Decimal = ZERO
    daily_charge: Decimal = ZERO
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def rate_at(self, minute: int) -> str:
        for window in self.windows:
            if window.start <= minute < window.end:
                return window.rate
        raise AssertionError(f"tariff {self.id}: no window at minute {minute}")


@dataclass(frozen=True)
class Piece:
    """A part of an interval's energy with one price."""

    kwh: Decimal
    price: Decimal
    label: str  # "flat", "peak", "tier1", "winter:2026/tier2", ...
    month: str  # YYYY-MM, local, for the allowance

    @property
    def cost(self) -> Decimal:
        return self.kwh * self.price


@dataclass(frozen=True)
class TierState:
    """Energy used so far in the current tier period, per meter."""

    period: str = ""
    used: Decimal = ZERO


@dataclass(frozen=True)
class AllowanceState:
    month: str = ""
    used: Decimal = ZERO


@dataclass(frozen=True)
class PricedInterval:
    pieces: tuple[Piece, ...]
    cost: Decimal
    free_kwh: Decimal
    credit: Decimal  # value of the free kWh, at the price they were charged
    tier: TierState
    allowance: AllowanceState


# -- loading and validation ---------------------------------------------------------------
def _hhmm(text: object, where: str, problems: list[str], allow_24: bool = True) -> int:
    try:
        hours, minutes = str(text).split(":")
        value = int(hours) * 60 + int(minutes)
        if not (0 <= int(minutes) < 60 and 0 <= value <= (1440 if allow_24 else 1439)):
            raise ValueError
        return value
    except ValueError:
        problems.append(f"{where}: {text!r} is not a time HH:MM")
        return 0


def _md(text: object, where: str, problems: list[str]) -> tuple[int, int]:
    try:
        month, day = (int(p) for p in str(text).split("-"))
        date(2024, month, day)
    except ValueError:
        problems.append(f"{where}: {text!r} is not a date MM-DD")
        return 1, 1
    if (month, day) == (2, 29):
        # 29 February exists one year in four: a season starting or ending there would start
        # on a different day in the other years.  Write 03-01 (or 02-28) instead.
        problems.append(f"{where}: {text!r} does not exist in most years; use 02-28 or 03-01")
        return 3, 1
    return month, day


def _price(value: object, where: str, problems: list[str]) -> Decimal:
    try:
        price = parse_decimal(value, "price", places=4)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return ZERO
    if price < 0:
        problems.append(f"{where}: price {value!r} is negative")
    return price


def _blocks(raw: object, where: str, problems: list[str]) -> tuple[Block, ...]:
    blocks: list[Block] = []
    previous = ZERO
    last = len(raw) - 1 if isinstance(raw, list) else -1
    for index, here, entry in _tables(raw, where, {"up_to", "price"}, "{up_to, price} blocks",
                                      problems):
        up_to = None
        if "up_to" in entry:
            try:
                up_to = parse_decimal(entry["up_to"], "up_to", places=2)
            except ValueError as exc:
                problems.append(f"{here}.up_to: {exc}")
                up_to = previous
            if up_to <= previous:
                problems.append(f"{here}.up_to: {entry['up_to']} must exceed the block before "
                                f"({previous})")
            previous = up_to
        elif index != last:
            problems.append(f"{here}: only the last block may leave out up_to")
        if "price" not in entry:
            problems.append(f"{here}: price is missing")
        blocks.append(Block(up_to, _price(entry.get("price", "0"), f"{here}.price", problems)))
    if blocks and blocks[-1].up_to is not None:
        problems.append(f"{where}: the last block must have no up_to (it takes the rest)")
    return tuple(blocks)


def _tables(raw: object, where: str, keys: set[str], what: str,
            problems: list[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The entries of a non-empty list of tables, each checked for shape and unknown keys."""
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: must be a non-empty list of {what}")
        return
    for index, entry in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{here}: must be a table {what}")
            continue
        _unknown(entry, keys, here, problems)
        yield index, here, entry


def _unknown(table: dict[str, Any], known: set[str], where: str, problems: list[str]) -> None:
    for key in table:
        if key not in known:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def parse_tariff(data: dict[str, Any], source: str = "tariff") -> Tariff:
    """Validate a parsed tariff document; raise `TariffError` listing every problem."""
    problems: list[str] = []
    _unknown(data, {"tariff", "energy", "allowance", "fixed"}, source, problems)
    head = data.get("tariff", {})
    energy = data.get("energy")
    if not isinstance(head, dict) or "id" not in head:
        problems.append(f"{source}: [tariff] id is missing")
        head = head if isinstance(head, dict) else {}
    else:
        _unknown(head, {"id", "name", "description"}, f"{source}: [tariff]", problems)
    if not isinstance(energy, dict):
        raise TariffError([*problems, f"{source}: [energy] table is missing"])
    where = f"{source}: [energy]"
    kind = energy.get("type")
    if kind not in KINDS:
        raise TariffError([*problems, f"{where}.type: {kind!r} is not one of {', '.join(KINDS)}"])
    known = {"type"}
    tariff = Tariff(id=str(head.get("id", "")), kind=kind, source=data)
    if kind == "flat":
        known |= {"price"}
        if "price" not in energy:
            problems.append(f"{where}.price: missing")
        tariff = replace(tariff, price=_price(energy.get("price", "0"), f"{where}.price",
                                              problems))
    elif kind == "tou":
        known |= {"prices", "windows", "use_meter_registers"}
        tariff = replace(tariff, **_tou(energy, where, problems))
    else:
        known |= {"period", "blocks", "seasons", "price"}
        tariff = replace(tariff, **_tiered(energy, where, problems))
    _unknown(energy, known, where, problems)
    allowance = data.get("allowance", {})
    if allowance:
        _unknown(allowance, {"kwh_per_month"}, f"{source}: [allowance]", problems)
        try:
            kwh = parse_decimal(allowance.get("kwh_per_month"), "kwh_per_month", places=2)
            if kwh < 0:
                raise ValueError("kwh_per_month must not be negative")
            tariff = replace(tariff, allowance_kwh=kwh)
        except ValueError as exc:
            problems.append(f"{source}: [allowance].kwh_per_month: {exc}")
    fixed = data.get("fixed", {})
    if fixed:
        _unknown(fixed, {"daily"}, f"{source}: [fixed]", problems)
        tariff = replace(tariff, daily_charge=_price(fixed.get("daily"),
                                                     f"{source}: [fixed].daily", problems))
    if problems:
        raise TariffError(problems)
    return tariff


def _tou(energy: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    prices_raw = energy.get("prices", {})
    prices: dict[str, Decimal] = {}
    if not isinstance(prices_raw, dict) or not prices_raw:
        problems.append(f"{where}.prices: give a price for each rate used "
                        f"({', '.join(RATE_NAMES)})")
        prices_raw = {}
    for name, value in prices_raw.items():
        if name not in RATE_NAMES:
            problems.append(f"{where}.prices.{name}: unknown rate (one of "
                            f"{', '.join(RATE_NAMES)})")
        prices[name] = _price(value, f"{where}.prices.{name}", problems)
    windows: list[Window] = []
    for _, here, entry in _tables(energy.get("windows"), f"{where}.windows",
                                  {"start", "end", "rate"}, "{start, end, rate} windows",
                                  problems):
        start = _hhmm(entry.get("start"), f"{here}.start", problems, allow_24=False)
        end = _hhmm(entry.get("end"), f"{here}.end", problems)
        rate = entry.get("rate")
        if rate not in prices:
            problems.append(f"{here}.rate: {rate!r} has no price in {where}.prices")
        if end <= start and end != 0:
            problems.append(f"{here}: end {entry.get('end')} is not after start "
                            f"{entry.get('start')} (split a window that crosses midnight)")
        windows.append(Window(start, 1440 if end == 0 else end, str(rate)))
    ordered = sorted(windows, key=lambda w: w.start)
    cursor = 0
    for w in ordered:
        if w.start < cursor:
            problems.append(f"{where}.windows: {_fmt(w.start)}-{_fmt(w.end)} overlaps the "
                            f"window before it (ends {_fmt(cursor)})")
        elif w.start > cursor:
            problems.append(f"{where}.windows: {_fmt(cursor)}-{_fmt(w.start)} is not covered")
        cursor = max(cursor, w.end)
    if ordered and cursor < 1440:
        problems.append(f"{where}.windows: {_fmt(cursor)}-24:00 is not covered")
    use_registers = energy.get("use_meter_registers", True)
    if not isinstance(use_registers, bool):
        problems.append(f"{where}.use_meter_registers: must be true or false")
    return {"prices": prices, "windows": tuple(ordered), "use_registers": bool(use_registers)}


def _tiered(energy: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    period = energy.get("period")
    if period not in PERIODS:
        problems.append(f"{where}.period: {period!r} is not one of {', '.join(PERIODS)}")
    out: dict[str, Any] = {"period": period}
    if period == "season":
        seasons: list[Season] = []
        for index, here, entry in _tables(energy.get("seasons"), f"{where}.seasons",
                                          {"name", "start", "end", "blocks"},
                                          "{name, start, end, blocks} seasons", problems):
            start = _md(entry.get("start"), f"{here}.start", problems)
            end = _md(entry.get("end"), f"{here}.end", problems)
            if start == end:
                problems.append(f"{here}: start and end are the same day")
            seasons.append(Season(str(entry.get("name", f"season{index + 1}")), start, end,
                                  _blocks(entry.get("blocks"), f"{here}.blocks", problems)))
        for i, a in enumerate(seasons):
            for b in seasons[i + 1:]:
                day = date(2024, 1, 1)
                while day.year == 2024:
                    if a.contains(day) and b.contains(day):
                        problems.append(f"{where}.seasons: {a.name} and {b.name} overlap on "
                                        f"{day:%m-%d}")
                        break
                    day += timedelta(days=1)
        out["seasons"] = tuple(seasons)
        covers_year = all(any(s.contains(date(2024, 1, 1) + timedelta(days=n))
                              for s in seasons) for n in range(366))
        if "price" in energy:
            out["price"] = _price(energy["price"], f"{where}.price", problems)
        elif seasons and not covers_year:
            problems.append(f"{where}.price: the seasons leave days uncovered; give the price "
                            "that applies outside them")
        if "blocks" in energy:
            problems.append(f"{where}.blocks: with period = \"season\", blocks go in each season")
    else:
        out["blocks"] = _blocks(energy.get("blocks"), f"{where}.blocks", problems)
        if "seasons" in energy:
            problems.append(f"{where}.seasons: only with period = \"season\"")
    return out


def _fmt(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def load_tariff(path: str | Path) -> Tariff:
    """Load and validate a tariff file; `TariffError` lists every problem with its place."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TariffError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return tariff_from_text(text, str(path))


def tariff_from_text(text: str, source: str = "tariff") -> Tariff:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TariffError([f"{source}: {exc}"]) from exc
    return parse_tariff(data, source)


# -- pricing ------------------------------------------------------------------------------
def _month_key(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _boundaries(tariff: Tariff, start: datetime, end: datetime, time_split: bool,
                tz: ZoneInfo, allowance: bool = True) -> list[datetime]:
    """Instants in (start, end) where the price of energy may change.

    A month boundary matters for the allowance only to a meter that has the allowance: for the
    others it would only move energy between months at the same price.
    """
    allowance = allowance and tariff.allowance_kwh > 0
    if not (time_split or allowance or tariff.period):
        return []  # a flat price with no allowance never changes
    found: set[datetime] = set()
    day = start.astimezone(tz).date()
    last = end.astimezone(tz).date()
    while day <= last:
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
        if time_split:
            found.update(midnight + timedelta(minutes=w.start) for w in tariff.windows)
        if day.day == 1 and (allowance or tariff.period == "month"):
            found.add(midnight)
        if tariff.period == "year" and day.month == 1 and day.day == 1:
            found.add(midnight)
        if tariff.period == "season" and any(
            (day.month, day.day) in (s.start, s.end) for s in tariff.seasons
        ):
            found.add(midnight)
        day += timedelta(days=1)
    return sorted(b for b in found if start < b < end)


def _elapsed(a: datetime, b: datetime) -> int:
    """Microseconds really elapsed from `a` to `b`.

    Python subtracts two datetimes of the same zone by their wall clocks, so across a daylight
    saving change it would count 23 or 25 hours in a day: subtract in UTC instead.
    """
    return (b.astimezone(UTC) - a.astimezone(UTC)) // MICROSECOND


def split_energy(kwh: Decimal, spans: list[tuple[datetime, datetime]]) -> list[Decimal]:
    """Share `kwh` over time spans in proportion to their elapsed time, in 0.01 kWh units.

    Rounded on running totals: the energy used by the end of each span is rounded down to
    0.01 kWh (as a register advancing in 0.01 kWh steps would show it) and each span gets the
    difference.  So the shares add up to `kwh`, and a split point where the price does not
    change moves no energy between prices (docs/prepaid.md, "Rounding").
    """
    if len(spans) == 1:
        return [kwh]
    units = int(kwh / CENT_KWH)
    lengths = [_elapsed(a, b) for a, b in spans]
    total = sum(lengths)
    if total <= 0:
        return [kwh] + [ZERO] * (len(spans) - 1)
    shares = []
    done = elapsed = 0
    for length in lengths:
        elapsed += length
        upto = units * elapsed // total
        shares.append(upto - done)
        done = upto
    rest = kwh - units * CENT_KWH  # energy finer than 0.01 kWh stays with the last span
    result = [Decimal(s) * CENT_KWH for s in shares]
    result[-1] += rest
    return result


def _tier_pieces(blocks: tuple[Block, ...], used: Decimal, kwh: Decimal, label: str,
                 month: str) -> Iterator[Piece]:
    lower = ZERO
    for index, block in enumerate(blocks, start=1):
        upper = block.up_to
        room = kwh if upper is None else max(ZERO, min(kwh, upper - max(used, lower)))
        if upper is not None and used >= upper:
            lower = upper
            continue
        if room > 0:
            yield Piece(room, block.price, f"{label}tier{index}", month)
            kwh -= room
            used += room
        if kwh <= 0:
            return
        lower = upper if upper is not None else lower


def price_interval(
    tariff: Tariff,
    start: datetime,
    end: datetime,
    kwh: Decimal,
    tz: ZoneInfo,
    tier: TierState = TierState(),
    allowance: AllowanceState = AllowanceState(),
    rate_kwh: list[Decimal] | None = None,
    allowance_enabled: bool = True,
) -> PricedInterval:
    """Price `kwh` used during `[start, end)`; `end <= start` puts it all at `start`."""
    end = max(end, start)
    pieces: list[Piece] = []
    use_registers = (
        tariff.kind == "tou" and tariff.use_registers and rate_kwh is not None
        and len(rate_kwh) == 4 and sum(rate_kwh) == kwh
    )
    if use_registers:
        assert rate_kwh is not None
        month = _month_key(end.astimezone(tz))
        for name, part in zip(RATE_NAMES, rate_kwh, strict=True):
            if part:
                if name not in tariff.prices:
                    raise TariffError([f"tariff {tariff.id}: the meter registered {part} kWh "
                                       f"in rate {name}, which has no price"])
                pieces.append(Piece(part, tariff.prices[name], name, month))
    else:
        edges = [start, *_boundaries(tariff, start, end, tariff.kind == "tou", tz,
                                     allowance_enabled), end]
        spans = list(itertools.pairwise(edges)) or [(start, end)]
        for (a, _), part in zip(spans, split_energy(kwh, spans), strict=True):
            if not part:
                continue
            local = a.astimezone(tz)
            month = _month_key(local)
            if tariff.kind == "flat":
                assert tariff.price is not None
                pieces.append(Piece(part, tariff.price, "flat", month))
            elif tariff.kind == "tou":
                rate = tariff.rate_at(local.hour * 60 + local.minute)
                pieces.append(Piece(part, tariff.prices[rate], rate, month))
            else:
                key, blocks = _period(tariff, local.date())
                if key is None:
                    assert tariff.price is not None
                    pieces.append(Piece(part, tariff.price, "off-season", month))
                    continue
                if key != tier.period:
                    tier = TierState(key, ZERO)
                label = f"{key}/" if tariff.period == "season" else ""
                new = list(_tier_pieces(blocks, tier.used, part, label, month))
                pieces.extend(new)
                tier = TierState(key, tier.used + part)
    cost = sum((p.cost for p in pieces), ZERO)
    free = credit = ZERO
    if tariff.allowance_kwh > 0 and allowance_enabled:
        for piece in pieces:
            if piece.month != allowance.month:
                allowance = AllowanceState(piece.month, ZERO)
            take = min(piece.kwh, tariff.allowance_kwh - allowance.used)
            if take > 0:
                free += take
                credit += take * piece.price
                allowance = AllowanceState(allowance.month, allowance.used + take)
    return PricedInterval(tuple(pieces), cost, free, credit, tier, allowance)


def _period(tariff: Tariff, day: date) -> tuple[str | None, tuple[Block, ...]]:
    if tariff.period == "month":
        return f"{day.year:04d}-{day.month:02d}", tariff.blocks
    if tariff.period == "year":
        return f"{day.year:04d}", tariff.blocks
    for season in tariff.seasons:
        if season.contains(day):
            return season.key(day), season.blocks
    return None, ()


def daily_charge_days(last_charged: date | None, today: date, commissioned: date) -> list[date]:
    """The days owing a fixed daily charge, from the day after the last one charged to today."""
    first = commissioned if last_charged is None else last_charged + timedelta(days=1)
    days = []
    while first <= today:
        days.append(first)
        first += timedelta(days=1)
    return days
