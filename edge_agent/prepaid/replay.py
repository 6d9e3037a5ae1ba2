"""The replay engine: readings through a tariff and a policy with the daemon's own code.

`bill replay` uses it to show a utility what its tariff and policy do before deployment.  It
runs the `Processor` unchanged on a scratch database, takes every relay action as confirmed,
and returns the timeline of ledger entries, events and relay decisions in time order.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_agent.errors import UsageError
from edge_agent.prepaid.enforcement import Decision
from edge_agent.prepaid.money import format_money, parse_decimal
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import LedgerEntry, Poll, RegisterReading
from edge_agent.prepaid.tariff import Tariff
from edge_agent.store import MeterRecord, Store

Row = tuple[datetime, str, Decimal | None, tuple[Decimal, ...] | None]  # kwh None: silent
TopUp = tuple[datetime, Decimal, str]  # when, amount, txn id (the one-meter form)
AccountTopUp = tuple[datetime, Decimal, str, str | None]  # ... and the meter it is for


@dataclass(frozen=True)
class ReplayResult:
    timeline: list[dict[str, object]]
    balances: dict[str, str]


@dataclass(frozen=True)
class Replay:
    """One replay set-up: a tariff, a policy, an opening balance for every meter's account.

    `keep_power`: meters that are never tripped; `relay_failures`: (meter, from) pairs, the
    first relay action of the meter at or after `from` fails (once each); `classes`: meter ->
    policy class of its account; `boot`, `headend_seen`: the daemon's start and the last time
    it heard from the head end, for the start-up and offline holds.
    """

    tariff: Tariff
    policy: Policy
    tz: ZoneInfo
    opening: Decimal = Decimal(0)
    multiplier: int = 1
    allowance: bool = False
    keep_power: frozenset[str] = frozenset()
    relay_failures: tuple[tuple[str, datetime], ...] = ()
    classes: tuple[tuple[str, str], ...] = ()
    boot: datetime | None = None  # the agent started then: the start-up window applies
    headend_seen: datetime | None = None  # last heard from the head end (offline horizon)

    def run(self, rows: list[Row], topups: list[TopUp] | list[AccountTopUp]) -> ReplayResult:
        """Bill `rows` in the order given (`read_readings_csv` sorts them by time unless asked
        not to); rows with one timestamp next to each other are one poll cycle.  Top-ups apply
        when a cycle at or after their time comes, the rest after the last row."""
        pending = sorted((t if len(t) == 4 else (*t, None)) for t in topups)
        for when, amount, _, _ in pending:
            if amount <= 0:
                raise UsageError(f"top-up at {when.isoformat()}: amount {amount} must be "
                                 "positive (a refund is an adjustment, not a top-up)")
        if not rows:
            raise UsageError("no readings to replay")
        with tempfile.TemporaryDirectory(prefix="edge-agent-replay-") as tmp:
            store = Store(Path(tmp) / "replay.db")
            store.scratch()
            try:
                return self._run(store, rows, pending)
            finally:
                store.close()

    def _run(self, store: Store, rows: list[Row], pending: list[AccountTopUp]) -> ReplayResult:
        meters = sorted({r[1] for r in rows})
        first_ts = min(r[0] for r in rows)
        for meter in meters:
            # Each meter is commissioned at its first reading: daily fees start there.  A
            # meter whose first rows are silent starts at its first answer.
            answered = [(r[0], r[2]) for r in rows if r[1] == meter and r[2] is not None]
            meter_ts, first_kwh = min(answered) if answered else (first_ts, None)
            store.add_meter(MeterRecord(meter, "replay", f"account-{meter}", self.tariff.id,
                                        multiplier=self.multiplier, allowance=self.allowance,
                                        keep_power=meter in self.keep_power),
                            first_kwh, meter_ts)
        proc = Processor(store, {self.tariff.id: self.tariff}, self.policy, self.tz, "replay")
        proc.started_at = self.boot
        if self.headend_seen is not None:
            store.set_headend_last_seen(self.headend_seen)
        for meter, name in self.classes:
            proc.set_account_class(f"account-{meter}", name, now=first_ts, actor="replay")
        accounts = [f"account-{m}" for m in meters]
        if self.opening:
            proc.apply_entries([LedgerEntry(f"opening:{a}", a, "opening", self.opening,
                                            first_ts) for a in accounts], first_ts, "replay")
        timeline = _Timeline(store, proc, self.tz, list(self.relay_failures))
        timeline.collect([], first_ts)
        for cycle in _cycles(rows):
            ts = cycle[0][0]
            while pending and pending[0][0] <= ts:
                self._topup(proc, timeline, pending.pop(0), meters)
            polls = [Poll(meter, ts, True, RegisterReading(meter, ts, kwh, rates),
                          [("forward_active_total", str(kwh))]) if kwh is not None
                     else Poll(meter, ts, False, error="no answer (replay)")
                     for _, meter, kwh, rates in cycle]
            timeline.collect(proc.process(polls, ts, telemetry=False), ts)
        while pending:  # after the last reading: still applied, still restoring
            self._topup(proc, timeline, pending.pop(0), meters)
        balances = {a: format_money(store.balance(a)) for a in accounts}
        return ReplayResult(timeline.items, balances)

    @staticmethod
    def _topup(proc: Processor, timeline: _Timeline, topup: AccountTopUp,
               meters: list[str]) -> None:
        when, amount, txn, meter = topup
        if meter is None:
            if len(meters) > 1:
                raise UsageError(f"top-up at {when.isoformat()}: several meters; say which "
                                 "(TIMESTAMP=AMOUNT@METER)")
            meter = meters[0]
        if meter not in meters:
            raise UsageError(f"top-up at {when.isoformat()}: no readings of meter {meter}")
        _, decisions = proc.apply_entries(
            [LedgerEntry(txn, f"account-{meter}", "topup", amount, when)], when, "replay")
        timeline.collect(decisions, when)


def _cycles(rows: list[Row]) -> list[list[Row]]:
    """Rows next to each other with one timestamp are one poll cycle (as the daemon polls
    every meter in a cycle at once): the trip guard counts them together.  A meter twice in
    one timestamp starts a new cycle."""
    cycles: list[list[Row]] = []
    for row in rows:
        current = cycles[-1] if cycles else None
        if current and current[0][0] == row[0] and all(r[1] != row[1] for r in current):
            current.append(row)
        else:
            cycles.append([row])
    return cycles


class _Timeline:
    """What happened since the last look: relay actions, new ledger entries, new events."""

    def __init__(self, store: Store, proc: Processor, tz: ZoneInfo,
                 failures: list[tuple[str, datetime]] | None = None) -> None:
        self.store, self.proc, self.tz = store, proc, tz
        self.items: list[dict[str, object]] = []
        self.seen_ledger = self.seen_events = 0
        self.failures = failures or []

    def _fails(self, meter: str, now: datetime) -> bool:
        """An injected relay failure due for this meter (used up once it fires)."""
        for index, (failing, since) in enumerate(self.failures):
            if failing == meter and since <= now:
                del self.failures[index]
                return True
        return False

    def local(self, text: str) -> str:
        return datetime.fromisoformat(text).astimezone(self.tz).isoformat()

    def collect(self, decisions: list[Decision], now: datetime) -> None:
        for d in decisions:
            ok = not self._fails(d.meter, now)
            self.proc.relay_done(d, ok, now, ("open" if d.action == "trip" else "closed")
                                 if ok else None, error="" if ok else "injected failure",
                                 actor="replay")
            self.items.append({"ts": self.local(now.isoformat()), "type": "relay",
                               "meter": d.meter, "action": d.action, "reason": d.reason,
                               "ok": ok})
        for entry in self.store.ledger(limit=100000, since_seq=self.seen_ledger):
            self.seen_ledger = entry["seq"]
            self.items.append({"ts": self.local(entry["ts"]), "type": "ledger",
                               "id": entry["id"], "account": entry["account"],
                               "kind": entry["kind"], "amount": entry["amount"],
                               "balance_after": entry["balance_after"]})
        for event in self.store.events(limit=100000):
            if event["seq"] <= self.seen_events:
                continue
            self.seen_events = event["seq"]
            self.items.append({"ts": self.local(event["ts"]), "type": "event",
                               "event": event["type"], "meter": event["meter"],
                               "account": event["account"], "detail": event["detail"]})


def parse_time(text: str, tz: ZoneInfo, where: str) -> datetime:
    """An ISO timestamp; one without a zone is local time in `tz`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not an ISO timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def read_readings_csv(path: Path, tz: ZoneInfo, as_given: bool = False) -> list[Row]:
    """Readings from a CSV `timestamp,meter,kwh[,rate1..rate4]`, sorted by time (stable) unless
    `as_given`; an empty kwh is a poll the meter did not answer.  A bad line is a
    `UsageError` naming file and line."""
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#") or row[0].strip().lower() == "timestamp":
                continue
            where = f"{path}:{number}"
            if len(row) not in (3, 7):
                raise UsageError(f"{where}: expected timestamp,meter,kwh[,rate1..rate4], got "
                                 f"{len(row)} fields")
            try:
                kwh = parse_decimal(row[2], "kwh", places=2) if row[2].strip() else None
                rates = tuple(parse_decimal(v, "rate", places=2) for v in row[3:7]
                              if kwh is not None) or None
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from None
            rows.append((parse_time(row[0], tz, where), row[1].strip(), kwh, rates))
    if not as_given:
        rows.sort(key=lambda r: r[0])
    return rows
