"""Tariffs: a validated TOML format and the exact pricing of one reading interval.

Pricing is a pure function.  The energy of an interval `[start, end)` is split at every
boundary that may change its price (a time-of-use window edge, a critical-peak or season
edge, the start of a tier period, a month for the free allowance, a tariff version's
`effective_from`), in proportion to elapsed time and in whole 0.01 kWh units (rounded on
running totals, so the parts add up exactly and a boundary where nothing changes moves
nothing), and each part is priced: by its TOU rate, by its tier, or both (tiers on a TOU
tariff).  A meter that has per-rate registers gives its own time-of-use split instead.  See
docs/prepaid.md.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
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
    months: frozenset[int] = frozenset()  # only in these months (a critical peak); all if empty


@dataclass(frozen=True)
class Block:
    up_to: Decimal | None  # cumulative kWh in the period; None for the last block
    price: Decimal = ZERO  # tiered tariffs
    surcharge: Decimal = ZERO  # TOU with tiers: added to the TOU price of the rate
    rate_prices: dict[str, Decimal] = field(default_factory=dict)  # TOU: this tier's prices


@dataclass(frozen=True)
class Season:
    name: str
    start: tuple[int, int]  # (month, day), inclusive
    end: tuple[int, int]  # (month, day), exclusive
    blocks: tuple[Block, ...] = ()  # tier thresholds in this season
    windows: tuple[Window, ...] = ()  # TOU windows in this season

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
    critical: tuple[Window, ...] = ()  # month-limited windows laid over the others (TOU)
    window_seasons: tuple[Season, ...] = ()  # seasonal TOU windows
    prorate: bool = False  # yearly tiers scaled to the months left in the first year
    effective_from: datetime | None = None  # when this version takes over (naive: local)
    later: tuple[Tariff, ...] = ()  # the versions that follow, by effective time
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def at(self, moment: datetime, tz: ZoneInfo) -> Tariff:
        """The version in force at `moment` (the first version also before its time)."""
        current = replace(self, later=())
        for version in self.later:
            if version.effective(tz) <= moment:
                current = version
        return current

    def effective(self, tz: ZoneInfo) -> datetime:
        """The effective time as an aware instant (a time without zone is local in `tz`)."""
        if self.effective_from is None:
            return datetime.min.replace(tzinfo=UTC)
        if self.effective_from.tzinfo is None:
            return self.effective_from.replace(tzinfo=tz)
        return self.effective_from

    def versions(self) -> tuple[Tariff, ...]:
        return (replace(self, later=()), *self.later)

    @property
    def tou_tiers(self) -> bool:
        """TOU prices with tiers on top (Shanghai, Guangdong)."""
        return self.kind == "tou" and self.period is not None

    def rate_at(self, minute: int) -> str:
        """The rate of the all-year windows at a minute of the day."""
        return _rate(self.windows, minute, self.id)

    def windows_on(self, day: date) -> tuple[Window, ...]:
        """The windows of a day: its season's (or the all-year ones) under any critical peak
        of its month."""
        windows = self.windows
        for season in self.window_seasons:
            if season.contains(day):
                windows = season.windows
                break
        critical = tuple(w for w in self.critical if day.month in w.months)
        return critical + windows if critical else windows

    def rate_on(self, local: datetime) -> str:
        """The rate in force at a local time."""
        if not (self.critical or self.window_seasons):
            return self.rate_at(local.hour * 60 + local.minute)
        return _rate(self.windows_on(local.date()), local.hour * 60 + local.minute, self.id)


def _rate(windows: tuple[Window, ...], minute: int, tariff_id: str) -> str:
    for window in windows:  # the first that holds: critical windows come first
        if window.start <= minute < window.end:
            return window.rate
    raise AssertionError(f"tariff {tariff_id}: no window at minute {minute}")


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


@dataclass(frozen=True, slots=True)
class TierState:
    """Energy used so far in the current tier period, per meter."""

    period: str = ""
    used: Decimal = ZERO


@dataclass(frozen=True, slots=True)
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


def _blocks(raw: object, where: str, problems: list[str],
            rates: dict[str, Decimal] | None = None) -> tuple[Block, ...]:
    """Tier blocks: `{up_to, price}`, or with TOU prices (`rates`) `{up_to, surcharge}` or
    `{up_to, prices}` (this tier's price of each rate)."""
    blocks: list[Block] = []
    previous = ZERO
    last = len(raw) - 1 if isinstance(raw, list) else -1
    keys = {"up_to", "price"} if rates is None else {"up_to", "surcharge", "prices"}
    what = "{up_to, price} blocks" if rates is None else "{up_to, surcharge | prices} blocks"
    for index, here, entry in _tables(raw, where, keys, what, problems):
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
        if rates is None:
            if "price" not in entry:
                problems.append(f"{here}: price is missing")
            blocks.append(Block(up_to, _price(entry.get("price", "0"), f"{here}.price",
                                              problems)))
        else:
            blocks.append(_tou_block(entry, up_to, here, rates, problems))
    if blocks and blocks[-1].up_to is not None:
        problems.append(f"{where}: the last block must have no up_to (it takes the rest)")
    return tuple(blocks)


def _tou_block(entry: dict[str, Any], up_to: Decimal | None, here: str,
               rates: dict[str, Decimal], problems: list[str]) -> Block:
    """A tier of a TOU tariff: a surcharge on every rate's price, or a price per rate."""
    if "surcharge" in entry and "prices" in entry:
        problems.append(f"{here}: give surcharge or prices, not both")
    if "prices" not in entry:
        return Block(up_to, surcharge=_price(entry.get("surcharge", "0"), f"{here}.surcharge",
                                             problems))
    raw = entry["prices"]
    if not isinstance(raw, dict):
        problems.append(f"{here}.prices: must be a table {{rate = price}}")
        return Block(up_to)
    prices = {name: _price(value, f"{here}.prices.{name}", problems)
              for name, value in raw.items()}
    for name in prices.keys() - rates.keys():
        problems.append(f"{here}.prices.{name}: the tariff has no rate {name!r}")
    for name in rates.keys() - prices.keys():
        problems.append(f"{here}.prices: {name} is missing (give every rate a price)")
    return Block(up_to, rate_prices=prices)


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
        _unknown(head, {"id", "name", "description", "effective_from"}, f"{source}: [tariff]",
                 problems)
    if not isinstance(energy, dict):
        raise TariffError([*problems, f"{source}: [energy] table is missing"])
    where = f"{source}: [energy]"
    kind = energy.get("type")
    if kind not in KINDS:
        raise TariffError([*problems, f"{where}.type: {kind!r} is not one of {', '.join(KINDS)}"])
    known = {"type"}
    tariff = Tariff(id=str(head.get("id", "")), kind=kind, source=data,
                    effective_from=_effective(head, f"{source}: [tariff]", problems))
    if kind == "flat":
        known |= {"price"}
        if "price" not in energy:
            problems.append(f"{where}.price: missing")
        tariff = replace(tariff, price=_price(energy.get("price", "0"), f"{where}.price",
                                              problems))
    elif kind == "tou":
        known |= {"prices", "windows", "use_meter_registers", "seasons", "tiers"}
        tariff = replace(tariff, **_tou(energy, where, problems))
    else:
        known |= {"period", "blocks", "seasons", "price", "prorate"}
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
    windows = _windows(energy.get("windows"), f"{where}.windows", prices, problems,
                       allow_months=True)
    critical = tuple(w for w in windows if w.months)
    out: dict[str, Any] = {"prices": prices, "windows": tuple(w for w in windows if not w.months),
                           "critical": critical}
    _cover_day(out["windows"], f"{where}.windows", problems)
    _critical_overlaps(critical, f"{where}.windows", problems)
    if "seasons" in energy:
        seasons = []
        for index, here, entry in _tables(energy["seasons"], f"{where}.seasons",
                                          {"name", "start", "end", "windows"},
                                          "{name, start, end, windows} seasons", problems):
            windows = _windows(entry.get("windows"), f"{here}.windows", prices, problems)
            _cover_day(windows, f"{here}.windows", problems)
            seasons.append(Season(str(entry.get("name", f"season{index + 1}")),
                                  _md(entry.get("start"), f"{here}.start", problems),
                                  _md(entry.get("end"), f"{here}.end", problems),
                                  windows=windows))
        _season_overlaps(seasons, f"{where}.seasons", problems)
        out["window_seasons"] = tuple(seasons)
    use_registers = energy.get("use_meter_registers", True)
    if not isinstance(use_registers, bool):
        problems.append(f"{where}.use_meter_registers: must be true or false")
    out["use_registers"] = bool(use_registers)
    if "tiers" in energy:
        tiers = energy["tiers"]
        if not isinstance(tiers, dict):
            problems.append(f"{where}.tiers: must be a table")
        else:
            _unknown(tiers, {"period", "blocks", "seasons", "prorate"}, f"{where}.tiers",
                     problems)
            out |= _tiered(tiers, f"{where}.tiers", problems, prices)
    return out


def _windows(raw: object, where: str, prices: dict[str, Decimal], problems: list[str],
             allow_months: bool = False) -> tuple[Window, ...]:
    """`{start, end, rate[, months]}` windows, sorted by start (coverage checked apart)."""
    keys = {"start", "end", "rate", "months"} if allow_months else {"start", "end", "rate"}
    windows: list[Window] = []
    for _, here, entry in _tables(raw, where, keys, "{start, end, rate} windows", problems):
        start = _hhmm(entry.get("start"), f"{here}.start", problems, allow_24=False)
        end = _hhmm(entry.get("end"), f"{here}.end", problems)
        rate = entry.get("rate")
        if rate not in prices:
            problems.append(f"{here}.rate: {rate!r} has no price in the prices table")
        if end <= start and end != 0:
            problems.append(f"{here}: end {entry.get('end')} is not after start "
                            f"{entry.get('start')} (split a window that crosses midnight)")
        months: frozenset[int] = frozenset()
        if "months" in entry:
            raw_months = entry["months"]
            if (not isinstance(raw_months, list) or not raw_months or not all(
                    isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 12
                    for m in raw_months)):
                problems.append(f"{here}.months: {raw_months!r} must be a list of months 1..12")
            else:
                months = frozenset(raw_months)
        windows.append(Window(start, 1440 if end == 0 else end, str(rate), months))
    return tuple(sorted(windows, key=lambda w: w.start))


def _cover_day(ordered: tuple[Window, ...], where: str, problems: list[str]) -> None:
    """The windows tile the day: no gap, no overlap."""
    cursor = 0
    for w in ordered:
        if w.start < cursor:
            problems.append(f"{where}: {_fmt(w.start)}-{_fmt(w.end)} overlaps the "
                            f"window before it (ends {_fmt(cursor)})")
        elif w.start > cursor:
            problems.append(f"{where}: {_fmt(cursor)}-{_fmt(w.start)} is not covered")
        cursor = max(cursor, w.end)
    if ordered and cursor < 1440:
        problems.append(f"{where}: {_fmt(cursor)}-24:00 is not covered")


def _critical_overlaps(critical: tuple[Window, ...], where: str, problems: list[str]) -> None:
    """Month-limited windows lie over the others; two of them may not meet in one month."""
    for i, a in enumerate(critical):
        for b in critical[i + 1:]:
            if a.months & b.months and a.start < b.end and b.start < a.end:
                problems.append(f"{where}: {_fmt(a.start)}-{_fmt(a.end)} and "
                                f"{_fmt(b.start)}-{_fmt(b.end)} overlap in month "
                                f"{min(a.months & b.months)}")


def _season_overlaps(seasons: list[Season], where: str, problems: list[str]) -> None:
    for i, a in enumerate(seasons):
        if a.start == a.end:
            problems.append(f"{where}: {a.name}: start and end are the same day")
        for b in seasons[i + 1:]:
            day = date(2024, 1, 1)
            while day.year == 2024:
                if a.contains(day) and b.contains(day):
                    problems.append(f"{where}: {a.name} and {b.name} overlap on "
                                    f"{day:%m-%d}")
                    break
                day += timedelta(days=1)


def _tiered(energy: dict[str, Any], where: str, problems: list[str],
            rates: dict[str, Decimal] | None = None) -> dict[str, Any]:
    """Tiers: of a tiered tariff, or (with `rates`, the TOU prices) laid on a TOU tariff.

    `seasons` give each season its blocks.  With `period = "season"` the energy counts per
    season; with `period = "month"` it counts per month, against the thresholds of the season
    the day is in (Guangdong: summer and winter thresholds).
    """
    period = energy.get("period")
    if period not in PERIODS:
        problems.append(f"{where}.period: {period!r} is not one of {', '.join(PERIODS)}")
    out: dict[str, Any] = {"period": period}
    prorate = energy.get("prorate", False)
    if not isinstance(prorate, bool):
        problems.append(f"{where}.prorate: must be true or false")
    elif prorate and period != "year":
        problems.append(f"{where}.prorate: only with period = \"year\"")
    out["prorate"] = prorate is True
    if "seasons" in energy and period in ("season", "month"):
        seasons = [
            Season(str(entry.get("name", f"season{index + 1}")),
                   _md(entry.get("start"), f"{here}.start", problems),
                   _md(entry.get("end"), f"{here}.end", problems),
                   _blocks(entry.get("blocks"), f"{here}.blocks", problems, rates))
            for index, here, entry in _tables(energy.get("seasons"), f"{where}.seasons",
                                              {"name", "start", "end", "blocks"},
                                              "{name, start, end, blocks} seasons", problems)]
        _season_overlaps(seasons, f"{where}.seasons", problems)
        out["seasons"] = tuple(seasons)
        covers_year = all(any(s.contains(date(2024, 1, 1) + timedelta(days=n))
                              for s in seasons) for n in range(366))
        if "price" in energy and rates is None:
            out["price"] = _price(energy["price"], f"{where}.price", problems)
        elif seasons and not covers_year and rates is None:
            problems.append(f"{where}.price: the seasons leave days uncovered; give the price "
                            "that applies outside them")
        if "blocks" in energy:
            problems.append(f"{where}.blocks: with seasons, blocks go in each season")
    elif period == "season":
        problems.append(f"{where}.seasons: must be a non-empty list of "
                        "{name, start, end, blocks} seasons")
    else:
        out["blocks"] = _blocks(energy.get("blocks"), f"{where}.blocks", problems, rates)
        if "seasons" in energy:
            problems.append(f"{where}.seasons: only with period = \"season\" or \"month\"")
    return out


def _effective(head: dict[str, Any], where: str, problems: list[str]) -> datetime | None:
    """`effective_from`: a TOML date-time (or ISO text); without a zone it is local time."""
    value = head.get("effective_from")
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"{where}.effective_from: {value!r} is not a date-time")
            return None
    if not isinstance(value, datetime):
        problems.append(f"{where}.effective_from: {value!r} is not a date-time")
        return None
    return value


def combine_versions(tariffs: Iterable[Tariff]) -> dict[str, Tariff]:
    """One `Tariff` per id with its versions chained in effective order.

    A version without `effective_from` is in force from the start; two versions of an id
    with the same effective time are a mistake (which one wins?), refused with both named.
    Comparing naive and aware times needs the zone, so naive ones sort as UTC here; they
    are only resolved in local time when pricing (`Tariff.at`).
    """
    by_id: dict[str, list[Tariff]] = {}
    for tariff in tariffs:
        for version in tariff.versions():
            by_id.setdefault(version.id, []).append(version)
    out = {}
    problems = []
    for tariff_id, versions in by_id.items():
        versions.sort(key=_version_key)
        for a, b in itertools.pairwise(versions):
            if _version_key(a) == _version_key(b):
                problems.append(f"tariff {tariff_id}: two versions take effect at "
                                f"{version_key(a) or 'the start'}")
        out[tariff_id] = replace(versions[0], later=tuple(versions[1:]))
    if problems:
        raise TariffError(problems)
    return out


def version_status(chain: Tariff, now: datetime, tz: ZoneInfo) -> list[tuple[Tariff, str]]:
    """Each version of a chained tariff with `superseded`, `current` or `pending` at `now`."""
    current = chain.at(now, tz)
    out = []
    for version in chain.versions():
        if version.effective_from == current.effective_from:
            status = "current"
        elif version.effective(tz) > now:
            status = "pending"
        else:
            status = "superseded"
        out.append((version, status))
    return out


def version_key(tariff: Tariff) -> str:
    """How a version is stored: its `effective_from` as written ('' from the start)."""
    return "" if tariff.effective_from is None else tariff.effective_from.isoformat()


def _version_key(tariff: Tariff) -> datetime:
    return tariff.effective(ZoneInfo("UTC"))


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
    season_days = {d for s in (*tariff.seasons, *tariff.window_seasons) for d in (s.start, s.end)}
    found: set[datetime] = set()
    day = start.astimezone(tz).date()
    last = end.astimezone(tz).date()
    while day <= last:
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
        if time_split:
            for w in tariff.windows_on(day):
                found.add(midnight + timedelta(minutes=w.start))
                if w.end < 1440:
                    found.add(midnight + timedelta(minutes=w.end))
        if day.day == 1 and (allowance or tariff.period == "month" or tariff.critical):
            found.add(midnight)
        if tariff.period == "year" and day.month == 1 and day.day == 1:
            found.add(midnight)
        if (day.month, day.day) in season_days:
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

    Rounded on running totals: the energy used by the end of each span is rounded to the
    nearest 0.01 kWh (halves up) and each span gets the difference.  So the shares add up to
    `kwh`, a split point where the price does not change moves no energy between prices, and
    an interval with one split point is shared exactly as before (docs/prepaid.md,
    "Rounding").
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
        upto = (2 * units * elapsed + total) // (2 * total)  # nearest, halves up
        shares.append(upto - done)
        done = upto
    rest = kwh - units * CENT_KWH  # energy finer than 0.01 kWh stays with the last span
    result = [Decimal(s) * CENT_KWH for s in shares]
    result[-1] += rest
    return result


def _tier_split(blocks: tuple[Block, ...], used: Decimal,
                kwh: Decimal) -> Iterator[tuple[int, Decimal]]:
    """(block index, kWh) of `kwh` used after `used` kWh of the period."""
    lower = ZERO
    for index, block in enumerate(blocks):
        upper = block.up_to
        if upper is not None and used >= upper:
            lower = upper
            continue
        room = kwh if upper is None else max(ZERO, min(kwh, upper - max(used, lower)))
        if room > 0:
            yield index, room
            kwh -= room
            used += room
        if kwh <= 0:
            return
        lower = upper if upper is not None else lower


@dataclass(frozen=True)
class Account:
    """What pricing needs to know of the customer: when the meter was commissioned (for
    part-year proration) and the household's tier bonus (kWh added to every threshold)."""

    since: date | None = None
    tier_bonus: Decimal = ZERO


NO_ACCOUNT = Account()


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
    account: Account = NO_ACCOUNT,
) -> PricedInterval:
    """Price `kwh` used during `[start, end)`; `end <= start` puts it all at `start`.

    A tariff with later versions is split exactly at each switch inside the interval (energy
    in proportion to time, as at any price boundary) and each part priced by its version.
    """
    end = max(end, start)
    if tariff.later:
        return _price_versions(tariff, start, end, kwh, tz, tier, allowance, rate_kwh,
                               allowance_enabled, account)
    pieces: list[Piece] = []
    use_registers = (
        tariff.kind == "tou" and tariff.use_registers and rate_kwh is not None
        and len(rate_kwh) == 4 and sum(rate_kwh) == kwh
    )
    if use_registers:
        assert rate_kwh is not None
        local = end.astimezone(tz)
        month = _month_key(local)
        # The registers do not say in which order the rates were used inside the interval:
        # with tiers, they fill the tiers in register order (sharp, peak, flat, valley).
        for name, part in zip(RATE_NAMES, rate_kwh, strict=True):
            if part:
                if name not in tariff.prices:
                    raise TariffError([f"tariff {tariff.id}: the meter registered {part} kWh "
                                       f"in rate {name}, which has no price"])
                tier = _price_part(tariff, name, part, local.date(), month, tier, pieces,
                                   account)
    else:
        edges = [start, *_boundaries(tariff, start, end, tariff.kind == "tou", tz,
                                     allowance_enabled), end]
        spans = list(itertools.pairwise(edges)) or [(start, end)]
        for (a, _), part in zip(spans, split_energy(kwh, spans), strict=True):
            if not part:
                continue
            local = a.astimezone(tz)
            rate = tariff.rate_on(local) if tariff.kind == "tou" else None
            tier = _price_part(tariff, rate, part, local.date(), _month_key(local), tier,
                               pieces, account)
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


def _price_versions(tariff: Tariff, start: datetime, end: datetime, kwh: Decimal,
                    tz: ZoneInfo, tier: TierState, allowance: AllowanceState,
                    rate_kwh: list[Decimal] | None, allowance_enabled: bool,
                    account: Account) -> PricedInterval:
    switches = sorted(t for t in (v.effective(tz) for v in tariff.later) if start < t < end)
    if not switches:
        return price_interval(tariff.at(start, tz), start, end, kwh, tz, tier, allowance,
                              rate_kwh, allowance_enabled, account)
    # The registers cannot say how much of each rate fell before the switch: split by time.
    spans = list(itertools.pairwise([start, *switches, end]))
    pieces: list[Piece] = []
    cost = free = credit = ZERO
    for (a, b), part in zip(spans, split_energy(kwh, spans), strict=True):
        priced = price_interval(tariff.at(a, tz), a, b, part, tz, tier, allowance, None,
                                allowance_enabled, account)
        pieces += priced.pieces
        cost += priced.cost
        free += priced.free_kwh
        credit += priced.credit
        tier, allowance = priced.tier, priced.allowance
    return PricedInterval(tuple(pieces), cost, free, credit, tier, allowance)


def _price_part(tariff: Tariff, rate: str | None, kwh: Decimal, day: date, month: str,
                tier: TierState, pieces: list[Piece], account: Account) -> TierState:
    """Append the pieces of `kwh` used on `day` at `rate`; return the new tier state."""
    if tariff.kind == "flat":
        assert tariff.price is not None
        pieces.append(Piece(kwh, tariff.price, "flat", month))
        return tier
    if rate is not None and not tariff.tou_tiers:
        pieces.append(Piece(kwh, tariff.prices[rate], rate, month))
        return tier
    key, blocks = _period(tariff, day, account)
    if key is None:  # outside every tier season
        if rate is not None:
            pieces.append(Piece(kwh, tariff.prices[rate], rate, month))
        else:
            assert tariff.price is not None
            pieces.append(Piece(kwh, tariff.price, "off-season", month))
        return tier
    if key != tier.period:
        tier = TierState(key, ZERO)
    label = f"{key}/" if tariff.period == "season" else ""
    if rate is None:
        for index, part in _tier_split(blocks, tier.used, kwh):
            pieces.append(Piece(part, blocks[index].price, f"{label}tier{index + 1}", month))
    else:
        base = tariff.prices[rate]
        for index, part in _tier_split(blocks, tier.used, kwh):
            block = blocks[index]
            price = block.rate_prices.get(rate, base + block.surcharge)
            pieces.append(Piece(part, price, f"{rate}:{label}tier{index + 1}", month))
    return TierState(key, tier.used + kwh)


def _period(tariff: Tariff, day: date,
            account: Account = NO_ACCOUNT) -> tuple[str | None, tuple[Block, ...]]:
    """The tier period a day is in (None outside every season) and its thresholds."""
    key: str | None
    blocks = tariff.blocks
    if tariff.period == "month":
        key = f"{day.year:04d}-{day.month:02d}"
        if tariff.seasons:
            season = next((s for s in tariff.seasons if s.contains(day)), None)
            if season is None:
                return None, ()
            blocks = season.blocks
    elif tariff.period == "year":
        key = f"{day.year:04d}"
        since = account.since
        if tariff.prorate and since is not None and since.year == day.year:
            # Connected during the year: the thresholds of the months left (the month of
            # connection counts whole), as the yearly tiers of Beijing are prorated.
            blocks = _scaled(blocks, Decimal(13 - since.month) / 12)
    else:
        season = next((s for s in tariff.seasons if s.contains(day)), None)
        if season is None:
            return None, ()
        key, blocks = season.key(day), season.blocks
    if account.tier_bonus:
        blocks = tuple(replace(b, up_to=b.up_to + account.tier_bonus) if b.up_to is not None
                       else b for b in blocks)
    return key, blocks


def _scaled(blocks: tuple[Block, ...], factor: Decimal) -> tuple[Block, ...]:
    """Thresholds times `factor`, rounded half up to 0.01 kWh."""
    return tuple(
        replace(b, up_to=(b.up_to * factor).quantize(CENT_KWH, ROUND_HALF_UP))
        if b.up_to is not None else b for b in blocks)


def daily_charge_days(last_charged: date | None, today: date, commissioned: date) -> list[date]:
    """The days owing a fixed daily charge, from the day after the last one charged (never
    before the commissioning: a meter commissioned again owes nothing for the days it was
    out of service) to today."""
    first = commissioned if last_charged is None else max(commissioned,
                                                          last_charged + timedelta(days=1))
    days = []
    while first <= today:
        days.append(first)
        first += timedelta(days=1)
    return days
