"""One poll cycle: store -> bill -> enforce, in one transaction.

`Processor` wires storage, billing and enforcement together and is used unchanged by the
daemon and by `bill replay`.  It decides; it does not touch a serial port.  Relay actions come
back as `Decision`s; the caller carries them out, confirms them, and reports the outcome with
`relay_done`, which is when the new phase is stored.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge_agent.errors import (
    Conflict,
    Malformed,
    TariffError,
    UnknownMeter,
    UnknownPolicyClass,
)
from edge_agent.prepaid.billing import DEFAULT_REGISTER_MAX, BillResult, bill
from edge_agent.prepaid.enforcement import (
    AlertState,
    Decision,
    MeterEnforcement,
    check_alerts,
    decide,
    gateway_hold,
    guard,
)
from edge_agent.prepaid.money import ZERO, from_micro
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.records import Event, LedgerEntry, Poll
from edge_agent.prepaid.tariff import Tariff
from edge_agent.prepaid.vocabulary import ADVISORY, RELAY_EVENTS, RESTORING, MeterAction, RelayOrder
from edge_agent.store import Store

log = logging.getLogger(__name__)

DAILY_COST_REFRESH = timedelta(hours=1)  # how long a usage estimate stays good
MIN_OBSERVED = timedelta(days=1)  # the shortest history a daily spend is divided by
DAY_SECONDS = Decimal(86400)
DAY_SLOTS = 1 + 24 + 24  # per meter: latest hour, requests and replies per hour of the day


TAMPER_COUNTERS = ("cover_open_count", "terminal_cover_open_count",
                   "magnetic_interference_count")
# Growth of the energy register after a confirmed trip that is still "no consumption": the
# register's last digit (0.01 kWh) may tick once from energy metered before the contacts
# opened, or a read may straddle it.
CWT_TOLERANCE = Decimal("0.02")


class Processor:
    """Stateful wiring of the pure billing and enforcement functions over a `Store`."""

    def __init__(self, store: Store, tariffs: dict[str, Tariff], policy: Policy,
                 tz: ZoneInfo, gateway: str) -> None:
        self.store = store
        self.tariffs = tariffs
        self.policy = policy
        self.tz = tz
        self.gateway = gateway
        self._daily_cost: dict[str, tuple[datetime, Decimal | None]] = {}
        self.started_at: datetime | None = None  # set by the daemon: the start-up window
        self.hold: str | None = None  # the gateway-wide trip hold in force (audited)
        self.register_max: dict[str, Decimal] = {}  # per meter, when not the default
        self.reload()

    def reload(self) -> None:
        """(Re)load caches from the database: at start, and after a failed transaction."""
        self.billing = self.store.billing_states()
        self.enforcement = self.store.enforcement_states()
        self.alerts = self.store.alert_states()
        self.online = self.store.online_states()
        self.account_settings = self.store.account_settings()
        self._first_commissioned: dict[str, datetime] | None = None
        self.counters: dict[tuple[str, str], str] = {}
        # In memory only: after a restart the first reading of a tripped meter is its
        # baseline (never a false alarm), and no hold-off runs.
        self.restored_at: dict[str, datetime] = getattr(self, "restored_at", {})
        self.trip_kwh: dict[str, Decimal] = getattr(self, "trip_kwh", {})
        self.day_window: dict[str, array[int]] = getattr(self, "day_window", {})
        # polls of meters the store did not know, warned about once (`_known`)
        self._unregistered: set[str] = getattr(self, "_unregistered", set()) - self.billing.keys()

    # -- the cycle ------------------------------------------------------------------------
    def process(self, polls: list[Poll], now: datetime,
                telemetry: bool = True) -> list[Decision]:
        """Store, bill and enforce one cycle's polls; return the relay actions to carry out."""
        self.store.use_large_cache()
        try:
            with self.store.transaction():
                return self._process(polls, now, telemetry)
        except BaseException:
            self.reload()
            raise

    def _known(self, polls: list[Poll]) -> list[Poll]:
        """The polls this processor can bill.  A meter registered behind its back (`commission
        --db` while the daemon runs) is picked up from the store; a poll of a meter the store
        does not know (removed while its cycle was on the wire) is left out with a warning,
        once per meter: one such meter must not stop billing and enforcement of its bus."""
        unknown = {p.meter for p in polls
                   if p.ok and p.energy is not None and p.meter not in self.billing}
        if not unknown:
            return polls
        if unknown - self._unregistered:  # new to us: the store may know it (one reload,
            self.reload()                 # not one per cycle for a meter it never knows)
            unknown -= self.billing.keys()
            for meter in sorted(unknown - self._unregistered):
                log.warning("meter %s answered a poll but is not registered (removed?): "
                            "not billed", meter)
            self._unregistered = (self._unregistered - self.billing.keys()) | unknown
        return [p for p in polls if p.meter not in unknown]

    def _process(self, polls: list[Poll], now: datetime, telemetry: bool) -> list[Decision]:
        store = self.store
        polls = self._known(polls)
        events: list[Event] = self._presence(polls) + self._tamper(polls)  # before storing
        # Answered polls of billed meters are counted with their billing state, below.
        counted = {p.meter: (p.ts, p.relay) for p in polls
                   if p.ok and p.energy is not None and p.meter in self.billing}
        day = self._count_day(polls)
        store.record_poll(((p.meter, p.ok, p.ts) for p in polls if p.meter not in counted), day)
        stored = store.record_readings((p.meter, p.ts, name, value) for p in polls if p.ok
                                       for name, value in p.values)
        entries: list[LedgerEntry] = []
        billed: dict[str, BillResult] = {}
        for poll in polls:
            if not poll.ok or poll.energy is None:
                continue
            state = self.billing.get(poll.meter)
            if state is None:  # (`_known` left such polls out)
                raise UnknownMeter(f"meter {poll.meter} is not registered")
            tariff = self._tariff(state.tariff)
            result = bill(state, poll.energy, tariff, self.tz, self.gateway,
                          self._tier_bonus(state.account),
                          self.register_max.get(poll.meter, DEFAULT_REGISTER_MAX))
            billed[poll.meter] = result
            entries += result.entries
            events += result.events
        added = store.append_ledger_entries(entries)
        store.save_billing_states([r.state for r in billed.values()], counted, self.billing, day)
        for meter, result in billed.items():
            self.billing[meter] = result.state
        accounts = {self.billing[p.meter].account for p in polls if p.meter in self.billing}
        # Balances just written in this transaction are exact; read only the others.
        balances = {row["account"]: Decimal(row["balance_after"]) for row in added}
        missing = accounts - balances.keys()
        balances.update((a, from_micro(m)) for a, m in store.balances_micro(missing).items())
        events += self._alerts(balances, now)
        hold = self._gateway_hold(now, events)
        decisions = []
        for poll in polls:
            state = self.enforcement.get(poll.meter)
            if state is None:
                continue
            consumed = self._since_trip(state, poll)
            decisions.append(decide(state, balances[state.account],
                                    self.policy_of(state.account), now, self.tz, poll.ok,
                                    consumed, hold, self.restored_at.get(poll.meter)))
        decisions, guard_events = guard(decisions, len(self.enforcement), self.policy, now)
        events += guard_events
        quiet = []
        for d in decisions:
            events += d.events
            if d.action is None:
                if d.on_success is not self.enforcement[d.meter]:  # only what changed
                    quiet.append(d.on_success)
            elif d.events:  # keep what the decision learnt even before the action succeeds
                quiet.append(replace(self.enforcement[d.meter],
                                     cwt_raised=d.on_success.cwt_raised))
        for state in quiet:
            self.enforcement[state.meter] = state
        store.save_enforcement_states(quiet)
        store.record_events(events)
        if telemetry and stored:
            store.enqueue_range("telemetry", *stored)
        return [d for d in decisions if d.action is not None]

    def _since_trip(self, state: MeterEnforcement, poll: Poll) -> Decimal:
        """Energy the register gained since the trip was confirmed (beyond the tolerance).

        The energy billed in the interval of the trip was mostly used before it: comparing
        with the register at the trip is what tells a bypass from a normal last interval.
        """
        if state.phase not in ("tripped", "manual") or not poll.ok or poll.energy is None:
            return ZERO
        baseline = self.trip_kwh.get(poll.meter)
        if baseline is None or poll.energy.kwh < baseline:
            self.trip_kwh[poll.meter] = poll.energy.kwh  # unknown (restart): start from here
            return ZERO
        grown = poll.energy.kwh - baseline
        return grown if grown > CWT_TOLERANCE else ZERO

    def _count_day(self, polls: list[Poll]) -> dict[str, tuple[int, int]]:
        """Requests and replies per meter over the last 24 hours (hourly buckets, kept in
        memory since the daemon started), for the collection success rate.

        One fixed array per meter (`DAY_SLOTS`): the hour of its latest poll, then 24
        request counts and 24 reply counts indexed by hour modulo 24; hours between two
        polls are cleared as time moves on.  ~260 bytes per meter however long the daemon
        runs (the lists of buckets before it took ~3 KB per meter after a day)."""
        out = {}
        window = self.day_window
        for poll in polls:
            hour = int(poll.ts.timestamp()) // 3600
            counts = window.get(poll.meter)
            if counts is None:
                counts = window[poll.meter] = array("I", bytes(4 * DAY_SLOTS))
                counts[0] = hour
            latest = counts[0]
            if hour > latest:  # a new hour: clear the slots of the hours since the latest
                for h in range(max(latest + 1, hour - 23), hour + 1):
                    counts[1 + h % 24] = counts[25 + h % 24] = 0
                counts[0] = latest = hour
            if hour > latest - 24:  # (a clock set back by more than a day counts nothing)
                counts[1 + hour % 24] += 1
                counts[25 + hour % 24] += poll.ok
            out[poll.meter] = (sum(counts[1:25]), sum(counts[25:]))
        return out

    def _presence(self, polls: list[Poll]) -> list[Event]:
        """`meter_offline` / `meter_online` once per change, never every cycle."""
        events = []
        for poll in polls:
            was = self.online.get(poll.meter, True)
            if was and not poll.ok:
                events.append(Event("meter_offline", "warning", poll.ts, poll.meter, None,
                                    {"error": poll.error}))
            elif poll.ok and not was:
                events.append(Event("meter_online", "info", poll.ts, poll.meter))
            self.online[poll.meter] = poll.ok
        return events

    def _tamper(self, polls: list[Poll]) -> list[Event]:
        """A tamper counter that went up since the last poll raises `tamper`."""
        events = []
        for poll in polls:
            for name, value in poll.values:
                if name not in TAMPER_COUNTERS:
                    continue
                key = (poll.meter, name)
                if key not in self.counters:
                    previous = self.store.latest_reading(poll.meter, name)
                    self.counters[key] = previous if previous is not None else value
                before = self.counters[key]
                if Decimal(value) > Decimal(before):
                    events.append(Event("tamper", "critical", poll.ts, poll.meter, None,
                                        {"counter": name, "from": before, "to": value}))
                self.counters[key] = value
        return events

    def _tariff(self, tariff_id: str) -> Tariff:
        tariff = self.tariffs.get(tariff_id)
        if tariff is None:
            raise TariffError([f"no tariff {tariff_id!r} is loaded"])
        return tariff

    def _alerts(self, balances: dict[str, Decimal], now: datetime) -> list[Event]:
        events: list[Event] = []
        changed = {}
        for account, balance in balances.items():
            state = self.alerts.get(account) or AlertState()
            new, raised = check_alerts(account, state, balance,
                                       self._daily_cost_of(account, now),
                                       self.policy_of(account), now)
            if new is not state:
                changed[account] = new
                self.alerts[account] = new
            events += raised
        if changed:
            self.store.save_alert_states(changed)
        return events

    def _daily_cost_of(self, account: str, now: datetime) -> Decimal | None:
        """Average daily spend over the usage window, cached for an hour of the processor's
        clock (`now`), so a replay refreshes it as the daemon does."""
        cached = self._daily_cost.get(account)
        if cached and timedelta(0) <= now - cached[0] < DAILY_COST_REFRESH:
            return cached[1]
        cost = self._usage_estimate(account, now)
        self._daily_cost[account] = (now, cost)
        return cost

    def _connected(self) -> dict[str, datetime]:
        """When each account's first meter was commissioned (cached until `reload`)."""
        if self._first_commissioned is None:
            first: dict[str, datetime] = {}
            for state in self.billing.values():
                when = state.commissioned_at
                if when is not None and (state.account not in first
                                         or when < first[state.account]):
                    first[state.account] = when
            self._first_commissioned = first
        return self._first_commissioned

    def _usage_estimate(self, account: str, now: datetime) -> Decimal | None:
        """Spend over the days actually observed: a customer connected yesterday has one day
        of history, not `usage_window_days` (dividing by those would understate the spend)."""
        window = timedelta(days=self.policy_of(account).usage_window_days)
        connected = self._connected().get(account)
        # Under a day of history counts as one day: the spend so far is then a lower bound of
        # a day's spend, where one evening hour times 24 would overstate it.
        observed = max(MIN_OBSERVED, min(window, now - connected)) if connected else window
        spent = self.store.charges_since(account, now - observed)
        if spent <= 0:
            return None
        return spent * DAY_SECONDS / Decimal(int(observed.total_seconds()))

    # -- policy classes, gateway holds (issue 14) ------------------------------------------
    def policy_of(self, account: str) -> Policy:
        """The policy of the account's class (the default policy without one)."""
        settings = self.account_settings.get(account)
        return self.policy.for_class(settings[0] if settings else None)

    def _tier_bonus(self, account: str) -> Decimal:
        settings = self.account_settings.get(account)
        return settings[1] if settings else ZERO

    def _gateway_hold(self, now: datetime, events: list[Event]) -> str | None:
        """The gateway-wide trip hold now; its start and end are audited as events."""
        hold = gateway_hold(self.policy, now, self.started_at, self.store.headend_last_seen())
        if hold != self.hold:
            if self.hold is not None:
                events.append(Event("enforcement_resumed", "info", now, None, None,
                                    {"reason": self.hold}))
            if hold is not None:
                detail: dict[str, object] = {"reason": hold}
                if hold == "startup":
                    detail["minutes"] = self.policy.startup_keep_power_minutes
                else:
                    detail["hours"] = self.policy.offline_enforcement_hours
                    last = self.store.headend_last_seen()
                    detail["headend_last_seen"] = last.isoformat() if last else None
                events.append(Event("enforcement_suspended", "warning", now, None, None,
                                    detail))
            self.hold = hold
        return hold

    def set_account_class(self, account: str, policy_class: str | None,
                          tier_bonus_kwh: Decimal | None = None, now: datetime | None = None,
                          actor: str = "config") -> None:
        """Assign an account's policy class (None: the default) and household tier bonus.

        The operation the head end's command and the configuration both call; an unknown
        class is refused (`UnknownPolicyClass`), since a typo must not silently leave a
        hospital on the default policy.
        """
        if policy_class is not None and policy_class not in self.policy.class_names:
            raise UnknownPolicyClass(f"no policy class {policy_class!r} (known: "
                                     f"{', '.join(self.policy.class_names) or 'none'})")
        before = self.account_settings.get(account, (None, ZERO))
        bonus = before[1] if tier_bonus_kwh is None else tier_bonus_kwh
        if before == (policy_class, bonus):
            return
        with self.store.transaction():
            self.store.set_account_settings(account, policy_class, bonus)
            if now is not None:
                self.store.record_events([Event(
                    "policy_class_set", "info", now, None, account,
                    {"class": policy_class, "tier_bonus_kwh": str(bonus), "by": actor})])
        self.account_settings[account] = (policy_class, bonus)

    def check_operator_trip(self, meter: str, force: bool) -> None:
        """Refuse an operator's trip of a meter whose class needs `force` (hospital/VIP)."""
        state = self.enforcement.get(meter)
        if state is None:
            raise UnknownMeter(f"unknown meter {meter}")
        if self.policy_of(state.account).trips_need_force and not force:
            raise Conflict(f"meter {meter}: account {state.account} is in a class whose trips "
                           "need force")

    # -- relay outcomes, top-ups ----------------------------------------------------------
    def recheck(self, decision: Decision, now: datetime) -> str | None:
        """Why a relay action decided earlier must not be carried out now, or None.

        The bus carries an action out some time after it was decided (after a top-up, after
        the cycle that decided it was billed); by then a poll may have billed more or a top-up
        may have arrived.  The action goes ahead only if deciding again on the current balance
        and policy gives the same action.
        """
        state = self.enforcement.get(decision.meter)
        if state is None:
            return "meter no longer enforced"
        balance = self.store.balance(state.account)
        hold = gateway_hold(self.policy, now, self.started_at, self.store.headend_last_seen())
        fresh = decide(state, balance, self.policy_of(state.account), now, self.tz, True, ZERO,
                       hold, self.restored_at.get(decision.meter))
        if fresh.action == decision.action:
            return None
        return (f"{decision.action} no longer due at balance {balance} "
                f"({fresh.action or fresh.reason or 'nothing to do'})")

    def relay_done(self, decision: Decision, ok: bool, now: datetime, relay: str | None = None,
                   error: str = "", actor: str = "policy", energy: Decimal | None = None
                   ) -> None:
        """Record the outcome of a relay action: the new phase only once it is confirmed.

        `energy` is the register read right after the action; a confirmed trip makes it the
        baseline of `consumption_while_tripped`, a confirmed restore starts the hold-off.
        """
        # A meter removed while its action was on the wire stays out of enforcement (a later
        # top-up of the account must not close it: it may be in another house by now); what
        # its relay did is still recorded.
        tracked = decision.meter in self.enforcement
        with self.store.transaction():
            events = []
            # The pre-trip alarm is advisory (many meters refuse it): its failure must not
            # hold the meter in its phase forever, so the phase moves on regardless.
            if tracked and (ok or decision.action in ADVISORY):
                self.enforcement[decision.meter] = decision.on_success
                self.store.save_enforcement_states([decision.on_success])
            if ok:
                if relay:
                    self.store.set_relay(decision.meter, relay)
                if tracked:
                    self._relay_moved(decision.meter, decision.action == MeterAction.TRIP,
                                      decision.action in RESTORING, now, energy)
                if decision.action in RELAY_EVENTS:
                    events.append(Event(RELAY_EVENTS[decision.action], "info", now,
                                        decision.meter, decision.on_success.account,
                                        {"action": decision.action, "reason": decision.reason,
                                         "by": actor, "energy": _kwh(energy)}))
            else:
                severity = "warning" if decision.action in ADVISORY else (
                    "critical")
                events.append(Event("relay_failed", severity, now, decision.meter,
                                    decision.on_success.account,
                                    {"action": decision.action, "error": error, "by": actor}))
            self.store.record_events(events)

    def apply_entries(self, entries: list[LedgerEntry], now: datetime,
                      origin: str = "headend") -> tuple[list[dict[str, object]],
                                                        list[Decision]]:
        """Apply head-end entries (top-ups, adjustments); decide at once for their meters."""
        with self.store.transaction():
            added = self.store.append_ledger_entries(entries, origin=origin)
            accounts = {e.account for e in entries}
            balances = {a: self.store.balance(a) for a in accounts}
            events = self._alerts(balances, now)
            # Only restoring actions run at once; a trip or an alarm waits for a poll cycle
            # in which the meter is seen to answer (a silent meter is never cut off).
            decisions = [
                d for d in (
                    decide(state, balances[state.account], self.policy_of(state.account),
                           now, self.tz, online=self._online(state.meter),
                           restored_at=self.restored_at.get(state.meter))
                    for state in self.enforcement.values() if state.account in accounts)
                if d.action in RESTORING
            ]
            for d in decisions:
                events += d.events
            quiet = [d.on_success for d in decisions if d.action is None]
            for state in quiet:
                self.enforcement[state.meter] = state
            self.store.save_enforcement_states(quiet)
            self.store.record_events(events)
        return added, [d for d in decisions if d.action is not None]

    def apply_topup(self, entry: LedgerEntry, seq: int | None, now: datetime,
                    origin: str = "headend") -> tuple[list[dict[str, object]], list[Decision]]:
        """A head-end top-up with its per-account sequence number (`seq`, 1, 2, ...).

        The money goes by the entry id as always (a repeat is a no-op).  The sequence only
        shows what is missing: a number beyond the next expected raises `topup_gap` naming
        the missing numbers, so the head end can resend them; the top-up itself is applied
        at once (the customer paid).  When the gap fills, `topup_gap_closed`.
        """
        if seq is None:
            return self.apply_entries([entry], now, origin)
        if seq < 1:
            raise Malformed(f"top-up seq {seq} must be 1 or more")
        with self.store.transaction():
            added, decisions = self.apply_entries([entry], now, origin)
            if not added:  # a top-up already applied, whatever number it carries now:
                return added, decisions  # counting that number would hide a missing one
            last, ahead = self.store.topup_sequence(entry.account)
            if seq <= last or seq in ahead:
                return added, decisions  # this number was seen: nothing to account
            events = []
            had_gap = bool(ahead)
            if seq == last + 1:
                last = seq
                while last + 1 in ahead:
                    last += 1
                    ahead -= {last}
                if had_gap and not ahead:
                    events.append(Event("topup_gap_closed", "info", now, None, entry.account,
                                        {"last_seq": last}))
            elif not ahead or seq > max(ahead):  # new numbers are missing: say which
                ahead |= {seq}
                missing = [n for n in range(last + 1, seq) if n not in ahead]
                events.append(Event("topup_gap", "warning", now, None, entry.account,
                                    {"missing": missing, "last_seq": last, "seq": seq,
                                     "txn_id": entry.id}))
            else:  # inside a gap already announced
                ahead |= {seq}
            self.store.set_topup_sequence(entry.account, last, frozenset(ahead))
            self.store.record_events(events)
        return added, decisions

    def _relay_moved(self, meter: str, tripped: bool, restored: bool, now: datetime,
                     energy: Decimal | None) -> None:
        if tripped:
            if energy is not None:
                self.trip_kwh[meter] = energy
            else:
                self.trip_kwh.pop(meter, None)  # the next reading is the baseline
        elif restored:
            self.restored_at[meter] = now
            self.trip_kwh.pop(meter, None)

    def _online(self, meter: str) -> bool:
        return self.store.is_online(meter)

    def operator_done(self, meter: str, order: str, ok: bool, now: datetime,
                      relay: str | None, error: str, actor: str, reason: str,
                      energy: Decimal | None = None) -> None:
        """Record a relay order of the head end or a technician, and what it means for
        enforcement: a trip holds the meter in `manual` until an operator closes it."""
        state = self.enforcement.get(meter)
        if state is None:
            raise UnknownMeter(f"unknown meter {meter}")
        detail = {"action": order, "by": actor, "reason": reason, "energy": _kwh(energy)}
        with self.store.transaction():
            if not ok:
                self.store.record_events([Event("relay_failed", "critical", now, meter,
                                                state.account, {**detail, "error": error})])
                return
            if order == "trip":
                new = replace(state, phase="manual", alarm_since=None, deferred=None,
                              cwt_raised=False)
                kind = "relay_tripped"
            elif order == "close":
                new = replace(state, phase="normal", alarm_since=None, deferred=None,
                              cwt_raised=False)
                kind = "relay_closed"
            else:
                keep = order == "keep_power_on"
                new = replace(state, keep_power=keep)
                self.store.set_keep_power(meter, keep)
                kind = "keep_power_on" if keep else "keep_power_off"
            self.enforcement[meter] = new
            self.store.save_enforcement_states([new])
            self._relay_moved(meter, order == RelayOrder.TRIP, order == RelayOrder.CLOSE, now,
                              energy)
            if relay:
                self.store.set_relay(meter, relay)
            self.store.record_events([Event(kind, "info", now, meter, state.account, detail)])


def _kwh(energy: Decimal | None) -> str | None:
    """The register at a relay action, for the event (None: it could not be read)."""
    return None if energy is None else str(energy)


__all__ = ["Decision", "MeterEnforcement", "Poll", "Processor"]
