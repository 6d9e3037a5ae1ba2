"""The concentrator's scheduled jobs: daily frozen read and backfill, meter clocks, line loss.

Each bus job runs on that bus's worker at POLL priority, like a poll cycle, and hands what it
read to the processing thread (the single writer), where the pure `grid/` functions decide and
the store keeps the result in one transaction.  The schedule, in the gateway's local time:

- at start: a catch-up backfill, queued before the first poll, so a gateway that was down bills
  the gap from the meters' freezes before a live reading would bill it in one piece;
- from `frozen_read_at` (00:05): the freeze of the midnight just past, for every meter;
- from `backfill_at` (00:15): the last `backfill_days` freezes of meters still missing days;
- when the frozen reads of every bus are in: line loss and customer usage of the day before
  (and of the month, on the 1st);
- every `clock_read_interval`: meter clocks (`clock_deviation` raised once per excursion);
  from `broadcast_at`: the daily clock sync (broadcast, then per-meter set for meters still
  off), refused while the gateway's own clock is not trustworthy.

DL/T 645-1997 and Modbus meters have no frozen data or clock here and keep today's behaviour.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import Future
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge_agent.clock import Clock
from edge_agent.config import Config
from edge_agent.errors import EXPECTED_ERRORS, MeterAbnormalReply
from edge_agent.field import collection
from edge_agent.field.worker import POLL, BusWorker
from edge_agent.grid import anomaly, clocksync, lineloss, usage
from edge_agent.grid.backfill import (
    FrozenDay,
    bill_frozen,
    correct_gap,
    freezes_to_read,
    is_gap,
    reconcile,
    settlements_to_read,
    state_from_dict,
    state_to_dict,
)
from edge_agent.prepaid.billing import DEFAULT_REGISTER_MAX
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import Event
from edge_agent.store import Store

log = logging.getLogger(__name__)

NTP_FLAG = Path("/run/systemd/timesync/synchronized")
WATCH_INTERVAL = 5.0  # seconds between two looks at what the polls stored
QUARTER_LATE = timedelta(minutes=2)  # a quarter's reads start at most this late
WATCHED = ("forward_active_total", "active_power_total", "status_word_3")


def ntp_synchronized(flag: Path = NTP_FLAG) -> bool | None:
    """Whether the system clock is NTP-synchronised: systemd-timesyncd touches `flag` once it
    has synchronised; otherwise `timedatectl show -p NTPSynchronized --value` answers for any
    time daemon (chrony, ntpd) through systemd-timedated.  None: nothing can tell."""
    if flag.exists():
        return True
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    answer = out.stdout.strip()
    return {"yes": True, "no": False}.get(answer)


def _at(text: str) -> time:
    hour, minute = map(int, text.split(":"))
    return time(hour, minute)


class Concentrator:
    """Schedules the concentrator's jobs on the bus workers; `tick` is called by the daemon."""

    def __init__(self, config: Config, store: Store, processor: Processor,
                 workers: dict[str, BusWorker], clock: Clock,
                 on_processor: Callable[..., Any],
                 ntp: Callable[[], bool | None] = ntp_synchronized) -> None:
        self.store = store
        self.processor = processor
        self.workers = workers
        self.clock = clock
        self.on_processor = on_processor
        self.ntp = ntp
        self.tz = config.tz
        self.reconfigure(config)
        self._started = False
        self._ran: dict[str, date] = {}  # job -> local day it last ran
        self._frozen: tuple[date, list[Future[Any]]] | None = None
        self._next_clock = 0.0
        self._sync_retry = 0.0
        self._clock_raised: dict[str, bool] | None = None
        self._next_watch = 0.0
        self._seen: dict[str, dict[str, tuple[int, str]]] = {}
        self._counters: dict[str, tuple[int, int]] = {}
        self._streaks: dict[str, int] = {}
        self._raised: set[tuple[str, str]] = set()
        self._saved_raised: dict[str, list[str]] | None = None  # as `status` last saw it
        self._states: dict[str, Any] = {}  # billing states at the last look (gap detection)
        self._quarter: datetime | None = None

    def reconfigure(self, config: Config) -> None:
        """The configuration (at start and on SIGHUP): settings, thresholds, total meters (the
        customers behind them are read from the stored meters; the time zone needs a
        restart)."""
        before = getattr(self, "settings", None)
        if before is not None and before.enabled and not config.concentrator.enabled:
            # switched off: what it held raised is stale (cleared at the next tick), and
            # switched on again it starts over with its catch-up backfill
            self._raised.clear()
            self._saved_raised = None
            self._started = False
        self.config = config
        self.settings = config.concentrator
        self.thresholds = anomaly.Thresholds(self.settings.fast_factor, stopped_kwh=
                                             self.settings.stopped_kwh,
                                             clock_seconds=self.settings.clock_threshold,
                                             failure_streak=self.settings.failure_streak)
        self.policy = clocksync.ClockPolicy(_at(self.settings.broadcast_at),
                                            timedelta(seconds=self.settings.clock_threshold),
                                            trust=self.settings.clock_trust)
        self.totals = {m.address: m for m in config.total_meters}

    @classmethod
    def for_agent(cls, agent: Any) -> Concentrator:
        """The daemon's concentrator; the agent's reload (SIGHUP) reconfigures it."""
        concentrator = cls(agent.config, agent.store, agent.processor, agent.workers,
                           agent.clock, agent.on_processor)
        agent.concentrator = concentrator
        return concentrator

    # -- schedule --------------------------------------------------------------------------
    def local_now(self) -> datetime:
        return self.clock.now().astimezone(self.tz)

    def tick(self) -> None:
        """Queue what is due (cheap when nothing is); never blocks on a bus.  A failure here
        is logged and never stops the daemon's polling, billing and enforcement."""
        try:
            if self.settings.enabled:
                self._tick()
            elif self._saved_raised is None:  # what a former run held raised is stale now
                self._saved_raised = {}
                self.on_processor(self._save_raised, True)
        except Exception:  # the book of record must not take prepaid enforcement down
            log.exception("concentrator: a scheduled job failed")

    def _tick(self) -> None:
        now = self.local_now()
        today = now.date()
        if not self._started:
            self._started = True
            self.backfill_all(self.settings.backfill_days)  # ahead of the first poll
        if now.time() >= _at(self.settings.frozen_read_at) and self._due("frozen", today):
            self._frozen = (today, self.backfill_all(1))
        if now.time() >= _at(self.settings.backfill_at) and self._due("backfill", today):
            self._frozen = (today, self.backfill_all(self.settings.backfill_days))
        if self._frozen and all(f.done() for f in self._frozen[1]):
            day = self._frozen[0] - timedelta(days=1)
            self._frozen = None
            self.on_processor(self.close_day, day)
        self._clocks(now)
        self._quarters(now)
        if self.clock.monotonic() >= self._next_watch:
            self._next_watch = self.clock.monotonic() + WATCH_INTERVAL
            self.on_processor(self.watch)

    def _clocks(self, now: datetime) -> None:
        """The daily sync as soon as it is due and the moment is safe (away from the hour and
        midnight), else the periodic clock read; a refused sync is tried again an interval
        later (the gateway's clock may have synchronised by then)."""
        mono, interval = self.clock.monotonic(), self.settings.clock_read_interval
        if (now.time() >= self.policy.broadcast_at and mono >= self._sync_retry
                and clocksync.away_from_hour(now) and self._due("clock_sync", now.date())):
            self._next_clock = self._sync_retry = mono + interval
            self.clocks_all(sync=True)
        elif mono >= self._next_clock:
            self._next_clock = mono + interval
            self.clocks_all(sync=False)

    def _due(self, job: str, today: date, mark: bool = True) -> bool:
        if self._ran.get(job) == today:
            return False
        if mark:
            self._ran[job] = today
        return True

    def _preempt(self, bus: str) -> None:
        """Between two meters of a bus job (on the bus thread): the relay orders and
        technician requests waiting run first, as between two transactions of a poll."""
        worker = self.workers.get(bus)
        if worker is not None:
            worker.preempt()

    def _meters_on(self, bus: str) -> list[str]:
        billed = [m.address for m in self.store.meters() if m.bus == bus]
        return sorted(set(billed) | {a for a, m in self.totals.items() if m.bus == bus})

    # -- frozen data and backfill ----------------------------------------------------------
    def backfill_all(self, days: int) -> list[Future[Any]]:
        return [self.workers[name].submit(self._backfill_job(name, days), POLL)
                for name in self.workers]

    def _backfill_job(self, bus: str, days: int) -> Callable[[Any], int]:
        def job(driver: Any) -> int:
            client = collection.client_of(driver)
            if client is None:
                return 0  # 1997 and Modbus meters: no frozen data
            today = self.local_now().date()
            read = 0
            for meter in self._meters_on(bus):
                self._preempt(bus)
                have = self.store.freeze_days(meter, today - timedelta(days=days))
                wanted = freezes_to_read(today, have, days)
                if not wanted:
                    continue
                try:
                    freezes = collection.read_freezes(client, meter, wanted)
                    settled = self._settlements(client, meter, freezes)
                except EXPECTED_ERRORS as exc:
                    log.info("frozen data of %s not read: %s", meter, exc)
                    continue
                try:  # one meter's failure (its own transaction) must not stop the bus's
                    self.on_processor(self.apply_freezes, meter, freezes, settled)
                except Exception as exc:  # (each meter on its own)
                    log.error("frozen data of %s read but not billed: %s", meter, exc,
                              exc_info=None if isinstance(exc, EXPECTED_ERRORS) else exc)
                    continue
                read += len(freezes) + len(settled)
            return read
        return job

    def _settlements(self, client: Any, meter: str, daily: list[FrozenDay]) -> list[FrozenDay]:
        """Settlement-day freezes inside a gap older than the daily freezes read."""
        state = self.processor.billing.get(meter)
        if state is None or state.last_ts is None:
            return []
        now = self._gateway_local()
        earliest = min((f.at for f in daily), default=now)
        last = state.last_ts.astimezone(self.tz).replace(tzinfo=None)
        wanted = settlements_to_read(now, last, earliest, self.settings.settlement_day,
                                     self.settings.settlement_hour)
        out = []
        for n, moment in wanted:
            try:
                out.append(collection.read_settlement(client, meter, n, moment))
            except MeterAbnormalReply:
                break  # not kept that far back
        return out

    def apply_freezes(self, meter: str, freezes: list[FrozenDay],
                      settled: list[FrozenDay] | None = None) -> None:
        """Keep the daily freezes; bill those and the settlement freezes (`settled`) after
        the meter's last billed reading (processing thread: the processor's billing cache and
        the store change together).  A settlement freeze is kept as a day's closing freeze
        only when it was made at midnight (a settlement hour of 0)."""
        processor, store = self.processor, self.store
        state = processor.billing.get(meter)
        settled = settled or []
        kept = freezes + [f for f in settled if f.at.time() == time(0)]
        freezes = freezes + settled
        with store.transaction():
            if state is None or not freezes:  # a total meter, or nothing new
                store.record_freezes(kept, self.clock.now())
                return
            done = bill_frozen(state, freezes, processor._tariff(state.tariff), self.tz,
                               processor.gateway, *self._billing_args(state))
            store.append_ledger_entries(done.entries)
            if done.billed:
                store.save_billing_states([done.state], previous=processor.billing)
            store.record_freezes(kept, self.clock.now())
            store.record_events(done.events)
            state = self._correct(done.state, freezes)
        processor.billing[meter] = state
        self._states[meter] = state  # billed from freezes: not a gap for `watch`

    def _billing_args(self, state: Any) -> tuple[Decimal, Decimal]:
        """The account's household tier bonus and the meter's register maximum: freezes are
        billed as the polls bill."""
        return (self.processor._tier_bonus(state.account),
                self.processor.register_max.get(state.meter, DEFAULT_REGISTER_MAX))

    def _correct(self, state: Any, freezes: list[FrozenDay]) -> Any:
        """A gap billed in proportion to time that these freezes fall inside gets its
        correction entry, and the running tier and allowance counters follow it."""
        key = f"billed_gap:{state.meter}"
        pending = self.store.setting(key)
        if not pending:
            return state
        gap = json.loads(pending)
        before, after = state_from_dict(gap["before"]), state_from_dict(gap["after"])
        ids = [f"{self.processor.gateway}:{kind}:{state.meter}:{after.charge_seq}"
               for kind in ("charge", "allowance")]
        billed = sum((Decimal(r["amount"]) for r in self.store.ledger_entries_by_id(ids)),
                     Decimal(0))
        # repriced under the tariff the gap was billed with, not one assigned since
        tariff = after.tariff if after.tariff in self.processor.tariffs else state.tariff
        fix = correct_gap(before, after, billed, freezes,
                          self.processor._tariff(tariff), self.tz,
                          self.processor.gateway, self.clock.now(),
                          *self._billing_args(state))
        if fix is None:
            return state
        self.store.set_setting(key, "")
        if fix.entry is not None:
            self.store.append_ledger_entries([fix.entry])
            self.store.record_events([Event("frozen_correction", "info", fix.entry.ts,
                                            state.meter, state.account,
                                            {"entry": fix.entry.id,
                                             "amount": str(fix.entry.amount)})])
        new = reconcile(state, after, fix.repriced)
        self.store.save_billing_states([new], previous={state.meter: state})
        return new

    # -- 15-minute line loss ------------------------------------------------------------------
    def _quarters(self, now: datetime) -> None:
        """At each quarter hour: read the registers of every area's meters, and compute the
        loss of the quarter before last (its closing reads are finished by then)."""
        if not self.totals:
            return
        quarter = lineloss.quarter_start(now)
        if quarter == self._quarter:
            return
        self._quarter = quarter
        if now - quarter > QUARTER_LATE:
            return  # started mid-quarter: a read now is not the quarter's opening register
        for name in self.workers:
            self.workers[name].submit(self._quarter_job(name, quarter), POLL)
        self.on_processor(self.quarter_loss, quarter - timedelta(minutes=30))

    def _area_meters(self, bus: str) -> list[str]:
        """Meters of line-loss areas on one bus: total meters first, then their customers."""
        totals = [a for a, m in sorted(self.totals.items()) if m.bus == bus]
        customers = sorted(m.address for m in self.store.meters()
                           if m.bus == bus and m.behind in self.totals)
        return totals + customers

    def customers(self, area: str) -> dict[str, int]:
        """The customer meters behind an area's total meter, with their multipliers: the
        stored (active) meters, as the file seeded them or the head end added them
        (`add_meter` `behind`) or a technician swapped them in (a replacement inherits its
        area); a removed or replaced meter is no longer in the area."""
        return {m.address: m.multiplier for m in self.store.meters() if m.behind == area}

    def _swapped(self, area: str, start: datetime, end: datetime) -> dict[str, None]:
        """Meters of the area replaced inside the period: part of its energy went through
        them and is not in the freezes of the meters in the area now, so the period counts
        them as not read (incomplete: never a false high loss on the day of a swap)."""
        return {m: None for m, behind in self.store.swapped_out(start, end).items()
                if behind == area}

    def _quarter_job(self, bus: str, quarter: datetime) -> Callable[[Any], int]:
        def job(driver: Any) -> int:
            client = collection.client_of(driver)
            if client is None:
                return 0
            values, read_at = {}, {}
            for meter in self._area_meters(bus):
                self._preempt(bus)
                try:
                    values[meter] = Decimal(str(client.read(meter, "energy").value))
                except EXPECTED_ERRORS:
                    continue
                read_at[meter] = self.clock.now()  # when the reply came: the register's time
            self.on_processor(self._record_quarter, quarter, values, read_at)
            return len(values)
        return job

    def _record_quarter(self, quarter: datetime, values: dict[str, Decimal],
                        read_at: dict[str, datetime] | None = None) -> None:
        with self.store.transaction():
            self.store.record_quarter(quarter, values, read_at)

    def quarter_loss(self, start: datetime) -> None:
        """The loss of [start, start + 15 min) of every area (processing thread); its
        `line_loss_high` / `line_loss_negative` are raised once while they last."""
        end = start + timedelta(minutes=15)
        opening, closing = self.store.quarter_values(start), self.store.quarter_values(end)
        if not opening or not closing:
            return  # the concentrator was not running at one of the quarter's ends
        opened, closed = self.store.quarter_times(start), self.store.quarter_times(end)
        skew = self.settings.quarter_skew
        events: list[Event] = []
        with self.store.transaction():
            for area, total in sorted(self.totals.items()):
                def energy(meter: str, multiplier: int) -> Decimal | None:
                    return lineloss.energy_between(opening.get(meter), closing.get(meter),
                                                   multiplier)

                sales = {m: energy(m, multiplier)
                         for m, multiplier in self.customers(area).items()}
                sales.update(self._swapped(area, start, end))
                meters = [area, *sales]
                late = (lineloss.late_reads(start, opened, meters, skew)
                        + lineloss.late_reads(end, closed, meters, skew))
                result = lineloss.line_loss(area, "15min", start, end,
                                            energy(area, total.ct_ratio * total.pt_ratio),
                                            sales, self.settings.loss_threshold, late, skew)
                self.store.save_line_loss(result, self.settings.publish)
                if not result.incomplete:
                    events += self._once(area, ("line_loss_high", "line_loss_negative"),
                                         lineloss.loss_events(result))
            self.store.record_events(events)
            self._save_raised()

    # -- the day closed: line loss and usage -----------------------------------------------
    def close_day(self, day: date) -> None:
        """Line loss of every area for `day` (and its month on the month's last day), and
        each account's usage (processing thread)."""
        with self.store.transaction():
            events: list[Event] = []
            for result in self.area_losses(day):
                self.store.save_line_loss(result, self.settings.publish)
                events += lineloss.loss_events(result)
            self.store.record_events(events)
            self._usage(day)

    def area_losses(self, day: date) -> list[lineloss.LineLoss]:
        first = day.replace(day=1)
        month_end = (day + timedelta(days=1)).day == 1
        spans = [("day", day - timedelta(days=1), lineloss.day_window(day, self.tz))]
        if month_end:
            spans.append(("month", first - timedelta(days=1),
                          lineloss.month_window(day, self.tz)))
        closing = self.store.freezes_of_day(day)
        results = []
        for period, before_day, (start, end) in spans:
            opening = self.store.freezes_of_day(before_day)
            for area, total in sorted(self.totals.items()):
                supply = self._energy(opening, closing, area, total.ct_ratio * total.pt_ratio)
                sales = {m: self._energy(opening, closing, m, multiplier)
                         for m, multiplier in self.customers(area).items()}
                sales.update(self._swapped(area, start, end))
                results.append(lineloss.line_loss(area, period, start, end, supply, sales,
                                                  self.settings.loss_threshold))
        return results

    @staticmethod
    def _energy(opening: dict[str, FrozenDay], closing: dict[str, FrozenDay], meter: str,
                multiplier: int) -> Any:
        first, last = opening.get(meter), closing.get(meter)
        return lineloss.energy_between(first and first.forward[0], last and last.forward[0],
                                       multiplier)

    def _usage(self, day: date) -> None:
        """One usage record per account and day: its meters' kWh summed, the account's cost
        of the day once, each meter's part listed (a meter without both freezes is named in
        `missing_meters`; an account none of whose meters has both is not closed)."""
        closing = self.store.freezes_of_day(day)
        opening = self.store.freezes_of_day(day - timedelta(days=1))
        start, end = lineloss.day_window(day, self.tz)
        accounts: dict[str, tuple[list[dict[str, object]], list[str]]] = {}
        for meter, state in sorted(self.processor.billing.items()):
            parts, missing = accounts.setdefault(state.account, ([], []))
            if meter not in closing or meter not in opening:
                missing.append(meter)
                continue
            parts.append(usage.meter_usage(opening[meter], closing[meter], state,
                                           self.processor._tariff(state.tariff)))
        for account, (parts, missing) in sorted(accounts.items()):
            if not parts:
                continue
            cost = self.store.charges_of_day(account, start, end)
            body = usage.account_usage(day, account, parts, cost, missing)
            self.store.save_usage(account, day, body, self.settings.publish)

    # -- anomalies over what the polls stored -----------------------------------------------
    def watch(self) -> None:
        """Compare what the polls stored since the last look: register too fast or stopped,
        status word 3 bit changes, read-failure streaks (processing thread)."""
        latest = self.store.latest_values(WATCHED)
        counters = self.store.poll_counters()
        multipliers = {m: s.multiplier for m, s in self.processor.billing.items()}
        gaps = self._gaps()
        events: list[Event] = []
        for meter, values in latest.items():
            before = self._seen.get(meter)
            self._seen[meter] = values
            if before is not None:
                events += self._compare(meter, before, values, multipliers.get(meter, 1))
        for meter, (polls, replies) in counters.items():
            events += self._failures(meter, polls, replies)
        if events or gaps or self._raised_changed():
            with self.store.transaction():
                self.store.record_events(events)
                for meter, body in gaps.items():
                    self.store.set_setting(f"billed_gap:{meter}", body)
                self._save_raised()

    def _raised_now(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for meter, kind in sorted(self._raised):
            out.setdefault(meter, []).append(kind)
        return out

    def _raised_changed(self) -> bool:
        return self._raised_now() != self._saved_raised

    def _save_raised(self, always: bool = False) -> None:
        """Keep the conditions held raised for `status` (in the caller's transaction), when
        they changed."""
        if always or self._raised_changed():
            self._saved_raised = self._raised_now()
            with self.store.transaction():
                self.store.save_raised(self._saved_raised)

    def _gaps(self) -> dict[str, str]:
        """Spans of a day or more billed from one reading since the last look (the freezes
        could not be read first): kept until a backfill corrects them."""
        gaps = {}
        for meter, state in self.processor.billing.items():
            before = self._states.get(meter)
            self._states[meter] = state
            if before is not None and is_gap(before, state):
                gaps[meter] = json.dumps({"before": state_to_dict(before),
                                          "after": state_to_dict(state)})
        return gaps

    def _compare(self, meter: str, before: dict[str, tuple[int, str]],
                 now: dict[str, tuple[int, str]], multiplier: int) -> list[Event]:
        events: list[Event] = []
        energy, old = now.get("forward_active_total"), before.get("forward_active_total")
        power, old_power = now.get("active_power_total"), before.get("active_power_total")
        if energy and old and power and old_power and energy[0] > old[0]:
            start, end = (datetime.fromtimestamp(t, self.tz) for t in (old[0], energy[0]))
            watts = (Decimal(power[1]), Decimal(old_power[1]))
            found = anomaly.register_rate(meter, start, end, Decimal(old[1]),
                                          Decimal(energy[1]), max(watts), self.thresholds,
                                          multiplier, min(watts))
            events += self._once(meter, ("register_too_fast", "register_stopped"), found)
        word, old_word = now.get("status_word_3"), before.get("status_word_3")
        if word and old_word and word[1] != old_word[1]:
            events += anomaly.status_changes(meter, 3, int(old_word[1], 16), int(word[1], 16),
                                             datetime.fromtimestamp(word[0], self.tz))
        return events

    def _once(self, meter: str, kinds: tuple[str, ...], found: list[Event]) -> list[Event]:
        """Raise each condition once while it lasts; it may be raised again once it cleared."""
        raised = {e.type for e in found}
        for kind in kinds:
            if kind not in raised:
                self._raised.discard((meter, kind))
        fresh = [e for e in found if (meter, e.type) not in self._raised]
        self._raised |= {(meter, e.type) for e in fresh}
        return fresh

    def _failures(self, meter: str, polls: int, replies: int) -> list[Event]:
        before = self._counters.get(meter)
        self._counters[meter] = (polls, replies)
        if before is None or polls == before[0]:
            return []
        streak, events = self._streaks.get(meter, 0), []
        if replies > before[1]:
            streak = 0
        else:
            for _ in range(polls - before[0]):
                streak, raised = anomaly.read_failures(meter, streak, False, self.clock.now(),
                                                       self.thresholds)
                events += raised
        self._streaks[meter] = streak
        if streak >= self.thresholds.failure_streak:  # held raised until the meter answers
            self._raised.add((meter, "read_failures"))
        else:
            self._raised.discard((meter, "read_failures"))
        return events

    # -- meter clocks ----------------------------------------------------------------------
    def clocks_all(self, sync: bool) -> list[Future[Any]]:
        return [self.workers[name].submit(self._clock_job(name, sync), POLL)
                for name in self.workers]

    def _gateway_local(self) -> datetime:
        return self.local_now().replace(tzinfo=None)

    def _clock_job(self, bus: str, sync: bool) -> Callable[[Any], dict[str, float]]:
        def job(driver: Any) -> dict[str, float]:
            client = collection.client_of(driver)
            if client is None:
                return {}
            deviations = self._read_clocks(client, self._meters_on(bus), bus)
            if sync:
                self._sync(client, deviations, bus)
            return {m: d.total_seconds() for m, d in deviations.items()}
        return job

    def _read_clocks(self, client: Any, meters: list[str], bus: str
                     ) -> dict[str, timedelta]:
        deviations = {}
        for meter in meters:
            self._preempt(bus)
            try:
                shown = collection.read_clock(client, meter)
            except EXPECTED_ERRORS:
                continue
            gateway = self._gateway_local()
            deviations[meter] = shown - gateway
            self.on_processor(self.record_clock, meter, shown, gateway)
        return deviations

    def record_clock(self, meter: str, shown: datetime, gateway: datetime,
                     set_at: datetime | None = None) -> None:
        """Keep a clock reading; `clock_deviation` once per excursion, `clock_ok` after."""
        if self._clock_raised is None:
            self._clock_raised = self.store.clock_raised()
        was = self._clock_raised.get(meter, False)
        raised, events = anomaly.clock_deviation(meter, shown.replace(tzinfo=self.tz),
                                                 gateway.replace(tzinfo=self.tz), was,
                                                 self.thresholds)
        with self.store.transaction():
            self.store.save_clock(meter, self.clock.now(), shown,
                                  (shown - gateway).total_seconds(), raised, set_at)
            self.store.record_events(events)
        self._clock_raised[meter] = raised

    def _sync(self, client: Any, deviations: dict[str, timedelta], bus: str) -> None:
        now = self._gateway_local()
        today = now.date().isoformat()
        trusted = clocksync.gateway_trusted(self.policy.trust, self.ntp())
        done_today = self.store.setting(f"clock_broadcast:{client.bus.settings.port}") == today
        plan = clocksync.plan_sync(deviations, now, trusted, done_today, self.policy)
        if plan.refused:
            self._ran.pop("clock_sync", None)  # try again at the next retry
            self.on_processor(self._refused, plan.refused, today)
            return
        to_set = list(plan.set_meters)
        if plan.broadcast:
            collection.broadcast_time(client, self._gateway_local())
            self.on_processor(self._setting, f"clock_broadcast:{client.bus.settings.port}",
                              today)
            off = [m for m, d in deviations.items() if abs(d) > self.policy.threshold]
            after = self._read_clocks(client, sorted(set(off) - set(to_set)), bus)
            to_set += [m for m, d in after.items() if abs(d) > self.policy.threshold]
        for meter in sorted(set(to_set)):
            try:
                collection.set_clock(client, meter, self._gateway_local())
            except MeterAbnormalReply as exc:
                self.on_processor(self._events, [Event(
                    "clock_set_refused", "warning", self.clock.now(), meter, None,
                    {"error": str(exc)})])
                continue
            except EXPECTED_ERRORS:
                continue
            self._read_clocks(client, [meter], bus)

    def _refused(self, why: str, today: str) -> None:
        """`clock_sync_refused` once a day while the gateway clock is not trusted."""
        if self.store.setting("clock_sync_refused") == today:
            return
        with self.store.transaction():
            self.store.set_setting("clock_sync_refused", today)
            self.store.record_events([Event("clock_sync_refused", "warning", self.clock.now(),
                                            None, None, {"reason": why})])

    def _setting(self, key: str, value: str) -> None:
        with self.store.transaction():
            self.store.set_setting(key, value)

    def _events(self, events: list[Event]) -> None:
        with self.store.transaction():
            self.store.record_events(events)
