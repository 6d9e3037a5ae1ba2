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

Row = tuple[datetime, str, Decimal, tuple[Decimal, ...] | None]  # ts, meter, kwh, rates
TopUp = tuple[datetime, Decimal, str]  # when, amount, txn id


@dataclass(frozen=True)
class ReplayResult:
    timeline: list[dict[str, object]]
    balances: dict[str, str]


@dataclass(frozen=True)
class Replay:
    """One replay set-up: a tariff, a policy, an opening balance for every meter's account."""

    tariff: Tariff
    policy: Policy
    tz: ZoneInfo
    opening: Decimal = Decimal(0)
    multiplier: int = 1
    allowance: bool = False

    def run(self, rows: list[Row], topups: list[TopUp]) -> ReplayResult:
        """Bill `rows` (in time order) with `topups` applied at their times."""
        for when, amount, _ in topups:
            if amount <= 0:
                raise UsageError(f"top-up at {when.isoformat()}: amount {amount} must be "
                                 "positive (a refund is an adjustment, not a top-up)")
        with tempfile.TemporaryDirectory(prefix="edge-agent-replay-") as tmp:
            store = Store(Path(tmp) / "replay.db")
            try:
                return self._run(store, rows, list(topups))
            finally:
                store.close()

    def _run(self, store: Store, rows: list[Row], pending: list[TopUp]) -> ReplayResult:
        first_ts = rows[0][0]
        for meter in sorted({r[1] for r in rows}):
            # Each meter is commissioned at its own first reading: daily fees start there.
            meter_ts, first_kwh = next((r[0], r[2]) for r in rows if r[1] == meter)
            store.add_meter(MeterRecord(meter, "replay", f"account-{meter}", self.tariff.id,
                                        multiplier=self.multiplier, allowance=self.allowance),
                            first_kwh, meter_ts)
        proc = Processor(store, {self.tariff.id: self.tariff}, self.policy, self.tz, "replay")
        accounts = sorted({f"account-{r[1]}" for r in rows})
        if self.opening:
            proc.apply_entries([LedgerEntry(f"opening:{a}", a, "opening", self.opening,
                                            first_ts) for a in accounts], first_ts, "replay")
        timeline = _Timeline(store, proc, self.tz)
        timeline.collect([], first_ts)
        for ts, meter, kwh, rates in rows:
            while pending and pending[0][0] <= ts:
                when, amount, txn = pending.pop(0)
                _, decisions = proc.apply_entries(
                    [LedgerEntry(txn, f"account-{meter}", "topup", amount, when)], when,
                    "replay")
                timeline.collect(decisions, when)
            poll = Poll(meter, ts, True, RegisterReading(meter, ts, kwh, rates),
                        [("forward_active_total", str(kwh))])
            timeline.collect(proc.process([poll], ts, telemetry=False), ts)
        balances = {a: format_money(store.balance(a)) for a in accounts}
        return ReplayResult(timeline.items, balances)


class _Timeline:
    """What happened since the last look: relay actions, new ledger entries, new events."""

    def __init__(self, store: Store, proc: Processor, tz: ZoneInfo) -> None:
        self.store, self.proc, self.tz = store, proc, tz
        self.items: list[dict[str, object]] = []
        self.seen_ledger = self.seen_events = 0

    def local(self, text: str) -> str:
        return datetime.fromisoformat(text).astimezone(self.tz).isoformat()

    def collect(self, decisions: list[Decision], now: datetime) -> None:
        for d in decisions:
            self.proc.relay_done(d, True, now, "open" if d.action == "trip" else "closed",
                                 actor="replay")
            self.items.append({"ts": self.local(now.isoformat()), "type": "relay",
                               "meter": d.meter, "action": d.action, "reason": d.reason})
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


def read_readings_csv(path: Path, tz: ZoneInfo) -> list[Row]:
    """Readings from a CSV `timestamp,meter,kwh[,rate1..rate4]`, sorted by time; a bad line
    is a `UsageError` naming file and line."""
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
                kwh = parse_decimal(row[2], "kwh", places=2)
                rates = tuple(parse_decimal(v, "rate", places=2) for v in row[3:7]) or None
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from None
            rows.append((parse_time(row[0], tz, where), row[1].strip(), kwh, rates))
    rows.sort(key=lambda r: r[0])
    return rows
