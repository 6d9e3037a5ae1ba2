"""The daemon: wires configuration, storage, bus workers, processing and the head-end link.

It holds no business logic: it schedules polls per bus, hands what the workers read to the
`Processor`, carries the processor's relay decisions out on the right bus, and feeds systemd's
watchdog only while polling and storage make progress.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.clock import Clock
from edge_agent.config import FIELD_DATA, BusConfig, Config
from edge_agent.errors import (
    EXPECTED_ERRORS,
    BusError,
    ConfigError,
    RelayUnsupported,
    UnknownMeter,
)
from edge_agent.field.drivers import make_driver
from edge_agent.field.worker import POLL, RELAY, TECHNICIAN, BusWorker, outcome
from edge_agent.prepaid.enforcement import Decision
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.prepaid.tariff import (
    Tariff,
    combine_versions,
    load_tariff,
    tariff_from_text,
    version_key,
)
from edge_agent.prepaid.vocabulary import ADVISORY, meter_action
from edge_agent.runtime import health
from edge_agent.runtime.systemd import Notifier
from edge_agent.store import MeterRecord, Store
from edge_agent.store.database import from_iso
from edge_agent.store.retention import RetentionSchedule

log = logging.getLogger("edge_agent")



def load_tariffs(config: Config, store: Store | None = None) -> dict[str, Tariff]:
    """Tariff files from the tariff directory, then those pushed by the head end; versions of
    one id (`effective_from`) are chained, a pushed version replacing a file's of the same
    effective time."""
    found: dict[tuple[str, str], Tariff] = {}
    directory = Path(config.tariff_dir)
    if directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            tariff = load_tariff(path)
            found[(tariff.id, version_key(tariff))] = tariff
    if store is not None:
        for row in store.tariff_versions():
            tariff = tariff_from_text(row["body"], f"head-end tariff {row['id']}")
            found[(tariff.id, version_key(tariff))] = tariff
    return combine_versions(found.values())


def _setting_text(value: object) -> str:
    """A meter setting as `meter_settings` stores it (booleans as JSON)."""
    import json

    return json.dumps(value) if isinstance(value, bool) else str(value)


def _setting_value(text: str, like: object) -> object:
    import json

    return json.loads(text) if isinstance(like, bool) else text


OPERATION_WAIT = 120.0  # seconds an operator request may wait for its bus
HEADEND_NOTE_INTERVAL = 60.0  # seconds between writes of headend_last_seen


class _Cycle:
    """One round of polls over a bus; only its bus thread touches `polls` and `remaining`."""

    def __init__(self, bus: str, meters: int) -> None:
        self.bus = bus
        self.remaining = meters
        self.polls: list[Any] = []
        self.done: Future[int] = Future()  # set once the polls are stored and enforced
        self.errors: list[BaseException] = []  # polls that raised (a port that went away)


HEARTBEAT = 10.0  # seconds between heartbeats (and STATUS= updates)
RELAY_REMINDER = 86400.0  # seconds: a meter without a relay is reported again at most daily


class Agent:
    """One running gateway agent."""

    def __init__(self, config: Config, clock: Clock | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier.from_environment()
        self.store = Store(config.database)
        # Events from here on (start-up's setting conflicts, deactivated meters...) go to the
        # journal; the history before this start was journalled by the run that stored it.
        newest = self.store.events(1)
        self._events_seen: int = newest[-1]["seq"] if newest else 0
        self.tariffs = load_tariffs(config, self.store)
        self.register_meters()
        self.processor = Processor(self.store, self.tariffs, self._policy(config), config.tz,
                                   config.gateway_id)
        self.processor.register_max = {m.address: m.register_max for m in config.meters}
        # One thread does all storing, billing and enforcing: a single writer, whose
        # connection alone needs the large page cache.  Bus workers hand it their polls.
        self.processing = ThreadPoolExecutor(1, thread_name_prefix="processor")
        self.workers = {b.name: BusWorker(b.name, make_driver(b, config, self._modbus_identity,
                                                              self.clock))
                        for b in config.buses}
        self.stop_event = threading.Event()
        self.started_at = self.clock.now()
        self.processor.started_at = self.started_at  # the start-up keep-power window
        self.apply_accounts(config)  # [accounts.NAME]: what the file changed
        self.cycles = 0  # written by the processing thread only
        self.processing_failures = 0  # likewise
        self.services: list[Any] = []  # head-end link, command handler, control socket...
        self.link: Any = None  # the head-end link, when MQTT is enabled
        self.concentrator: Any = None  # made by `run` (Concentrator.for_agent)
        self._next_poll: dict[str, float] = {}
        self._polling: dict[str, Future[Any]] = {}  # bus -> its cycle in progress
        self.reload_requested = threading.Event()
        self._status_at = float("-inf")
        self._headend_noted = float("-inf")
        self.bus_health = {b.name: health.BusHealth(b.name, b.port, b.poll_interval,
                                                    self.clock.monotonic())
                           for b in config.buses}
        # (meter, action) -> when a meter without a relay was last reported for it
        self._relay_unsupported: dict[tuple[str, str], float] = {}
        self.retention = RetentionSchedule(self.store, lambda: self.config.retention,
                                           self.clock.now, self.clock.monotonic,
                                           self.processing.submit)

    # -- set-up ---------------------------------------------------------------------------
    def _policy(self, config: Config) -> Any:
        """The configured policy with the head end's `set_policy` changes on top."""
        override = self.policy_override()
        if not override:
            return config.policy
        from edge_agent.prepaid.policy import parse_policy

        return parse_policy({**config.policy_raw, **override}, "policy (with head-end changes)")

    def _policy_conflicts(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """A `[policy]` key the file changed where the head end's `set_policy` value is kept:
        a `setting_conflict` event (meter null), not a silent overwrite."""
        import json

        from edge_agent.prepaid.records import Event

        override = self.policy_override()
        events = [Event("setting_conflict", "warning", self.clock.now(), None, None,
                        {"setting": f"policy.{key}", "file": json.dumps(new.get(key)),
                         "kept": json.dumps(value), "source": "headend"})
                  for key, value in override.items()
                  if new.get(key) != old.get(key) and new.get(key) != value]
        if events:
            with self.store.transaction():
                self.store.record_events(events)

    def apply_accounts(self, config: Config) -> None:
        """`[accounts.NAME]`: each key (class, tier bonus) the file sets differently from
        what it set when last applied (or for the first time) is applied; a class or bonus
        the head end set since is kept while the file's key stays as it was (a SIGHUP for
        another change, a restart, must not put a hospital back on the default policy)."""
        import json

        from edge_agent.prepaid.money import ZERO

        for account in config.accounts:
            key = f"account_file:{account.name}"
            file = {"policy_class": account.policy_class,
                    "tier_bonus_kwh": str(account.tier_bonus_kwh)}
            seen = json.loads(self.store.setting(key) or "null")
            if seen == file:
                continue
            now = self.clock.now()
            current = self.processor.account_settings.get(account.name, (None, ZERO))
            changed = {name for name, value in file.items()
                       if seen is None or seen.get(name) != value}
            self.processor.set_account_class(
                account.name,
                account.policy_class if "policy_class" in changed else current[0],
                account.tier_bonus_kwh if "tier_bonus_kwh" in changed else current[1],
                now, "config")
            with self.store.transaction():
                self.store.set_setting(key, json.dumps(file))

    def register_meters(self) -> None:
        """Meters from the configuration, under the ownership rule (docs/mqtt.md): the file
        seeds a meter; a setting the head end (or a technician) changed since is kept, and a
        file that disagrees with it raises one `setting_conflict` event per change of the
        file.  A meter the file no longer lists is deactivated, unless the head end or a
        technician added it."""
        with self.store.transaction():  # one fsync for the lot, not one per meter
            self._register_meters()

    def _register_meters(self) -> None:
        from edge_agent.prepaid.records import Event

        owned = self.store.meter_settings()
        now = self.clock.now()
        events: list[Event] = []
        listed = set()
        for meter in self.config.meters:
            listed.add(meter.address)
            settings = owned.get(meter.address, {})
            values = {"tariff": meter.tariff, "keep_power": meter.keep_power,
                      "removed": False}
            for name, setting in settings.items():
                if name not in values:
                    continue
                file_text = _setting_text(values[name])
                if file_text not in (setting["file_value"], setting["value"]):
                    events.append(Event("setting_conflict", "warning", now, meter.address,
                                        meter.account, {"setting": name, "file": file_text,
                                                        "kept": setting["value"],
                                                        "source": setting["source"]}))
                    self.store.set_meter_setting(meter.address, name, setting["value"],
                                                 setting["source"], from_iso(setting["at"])
                                                 or now, file_text)
                values[name] = _setting_value(setting["value"], values[name])
            if values["removed"]:
                continue  # removed by the head end: stays removed until it adds it again
            if "added" in settings:
                continue  # (re)added by the head end or a technician: its record (account,
                # tariff, multiplier) is theirs, not the file's, until they change it again
            tariff = str(values["tariff"])
            if tariff not in self.tariffs:
                raise ConfigError(f"meter {meter.address}: tariff {tariff!r} is not in "
                                  f"{self.config.tariff_dir}")
            known = self.store.meter(meter.address)
            record = MeterRecord(meter.address, meter.bus, meter.account, tariff,
                                 protocol=self.config.bus(meter.bus).protocol,
                                 multiplier=meter.multiplier,
                                 keep_power=bool(values["keep_power"]),
                                 allowance=meter.allowance, unit=meter.unit, model=meter.model,
                                 behind=meter.behind)
            if known is not None and not known.active:  # dropped from the file, now back
                last = self.store.reactivate_meter(record, now)
                events.append(Event("meter_reactivated", "warning", now, record.address,
                                    record.account, {"reason": "in the configuration again",
                                                     "last_billed_kwh": last}))
                continue
            initial = meter.initial_kwh if known is None else None
            self.store.add_meter(record, initial, now if initial is not None else None)
        self.store.seed_meter_locations(
            [(m.address, {k: getattr(m, k) for k in FIELD_DATA})
             for m in (*self.config.meters, *self.config.total_meters)], now)
        for record in self.store.meters():
            if record.address not in listed and "added" not in owned.get(record.address, {}):
                self.store.remove_meter(record.address)
                events.append(Event("meter_deactivated", "warning", now, record.address,
                                    record.account, {"reason": "no longer in the configuration"}))
        self.store.record_events(events)

    def _modbus_identity(self, address: str) -> tuple[int | None, str | None]:
        """A Modbus meter's unit id and register map as the database has them."""
        record = self.store.meter(address)
        return (None, None) if record is None else (record.unit, record.model)

    def read(self, meter: str, quantities: list[str]) -> list[dict[str, object]]:
        """A technician or head-end reading: ahead of routine polling on the meter's bus."""
        return self.worker_for(meter).submit(lambda driver: driver.read(meter, quantities),
                                             TECHNICIAN).result(OPERATION_WAIT)

    def on_processor(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on the processing thread and wait for its result (or its error)."""
        return self.processing.submit(fn, *args).result()

    # -- polling --------------------------------------------------------------------------
    # A poll job reads ONE meter, so a relay order or a technician request waits at most one
    # transaction (plus the one on the wire).  The polls of a bus cycle are collected on the
    # bus thread and handed to the processing thread when the last one is read: storing,
    # billing and enforcing never hold the port.  Counters are written by one thread each:
    # `cycles` and `processing_failures` by the processing thread, a worker's `failures` by
    # its bus thread.
    def poll_job(self, cycle: _Cycle, meter: str, quantities: tuple[str, ...]
                 ) -> Callable[[Any], None]:
        preempt = self.workers[cycle.bus].preempt

        record = self.bus_health[cycle.bus]

        def job(driver: Any) -> None:
            watched = health.ActivityDriver(driver, record, self.clock)
            try:
                cycle.polls.append(watched.poll(meter, quantities, self.clock.now(), preempt))
            except BaseException as exc:
                cycle.errors.append(exc)
                raise
            finally:
                cycle.remaining -= 1
                if cycle.remaining == 0:
                    self._hand_over(cycle)
        return job

    def _hand_over(self, cycle: _Cycle) -> None:
        """The bus goes on; the cycle's polls are processed on the processing thread."""
        try:
            self.processing.submit(self._process_cycle, cycle)
        except RuntimeError as exc:  # shutting down: the processing thread has stopped
            cycle.done.set_exception(exc)

    def _process_cycle(self, cycle: _Cycle) -> None:
        try:
            decisions = self.processor.process(cycle.polls, self.clock.now())
        except Exception as exc:
            self.processing_failures += 1
            log.warning("bus %s: processing a cycle of %d polls failed: %s", cycle.bus,
                        len(cycle.polls), exc)
            cycle.done.set_exception(exc)
            return
        self.cycles += 1
        self.dispatch(decisions)
        cycle.done.set_result(len(cycle.polls))

    def relay_job(self, decision: Decision, actor: str) -> Callable[[Any], str | None]:
        """Carry out one relay decision on its bus, decided again just before the bus does."""
        def job(driver: Any) -> str | None:
            assert decision.action is not None
            why = self.on_processor(self._recheck, decision, self.clock.now())
            if why is not None:
                log.info("relay %s on %s dropped: %s", decision.action, decision.meter, why)
                return None
            try:
                relay = driver.relay(decision.meter, decision.action)
                ok, error = True, ""
            except RelayUnsupported as exc:
                if not self._report_unsupported(decision.meter, decision.action):
                    return None  # reported already today: no event, no alert every poll
                relay, ok, error = None, False, str(exc)
            except EXPECTED_ERRORS as exc:
                relay, ok, error = None, False, str(exc)
                log.warning("relay %s on %s failed: %s", decision.action, decision.meter, exc)
            # The register at the action goes into its event (a pre-trip alarm has none).
            energy = (self._energy(driver, decision.meter)
                      if ok and decision.action not in ADVISORY else None)
            self.background(self.processor.relay_done, decision, ok, self.clock.now(), relay,
                            error, actor, energy)
            return relay
        return job

    def _recheck(self, decision: Decision, now: datetime) -> str | None:
        """Why a decided relay action must not be carried out now (processing thread): the
        meter was removed since (the processor's cache may still hold it, when the outcome
        of an action on the wire came in after the removal), or deciding again differs."""
        record = self.store.meter(decision.meter)
        if record is None or not record.active:
            return "meter removed"
        return self.processor.recheck(decision, now)

    @staticmethod
    def _energy(driver: Any, meter: str) -> Any:
        """The energy register right after a relay action, or None if it cannot be read."""
        try:
            return driver.energy(meter)
        except EXPECTED_ERRORS as exc:
            log.info("energy register of %s after a relay action: %s", meter, exc)
            return None

    def background(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn` on the processing thread without waiting; a failure is logged, counted."""
        def run() -> Any:
            try:
                return fn(*args)
            except Exception as exc:  # (its only caller: a relay outcome left unrecorded
                self.processing_failures += 1  # is an error someone must look at)
                log.error("processing %s failed: %s", getattr(fn, "__name__", fn), exc,
                          exc_info=None if isinstance(exc, EXPECTED_ERRORS) else exc)
                raise
        return self.processing.submit(run)

    def _report_unsupported(self, meter: str, action: str) -> bool:
        """A prepaid meter without a relay (DL/T 645-1997, a Modbus map without one): its
        `relay_failed` is raised once, then as a reminder at most daily, not every poll."""
        now = self.clock.monotonic()
        last = self._relay_unsupported.get((meter, action))
        if last is not None and now - last < RELAY_REMINDER:
            return False
        self._relay_unsupported[(meter, action)] = now
        log.error("meter %s has no remote relay: the agent cannot %s it (reported again at "
                  "most daily)", meter, action)
        return True

    def poll_now(self, bus_name: str | None = None) -> list[Future[Any]]:
        """Queue a poll of every meter of one bus (or all) now; each future completes when
        its cycle has been stored, billed and enforced."""
        futures = []
        for bus in self.config.buses:
            if bus_name in (None, bus.name):
                futures.append(self._start_cycle(bus))
        return futures

    def _start_cycle(self, bus: BusConfig) -> Future[Any]:
        meters = [m.address for m in self.store.meters() if m.bus == bus.name]
        cycle = _Cycle(bus.name, len(meters))
        self._polling[bus.name] = cycle.done
        if not meters:
            cycle.done.set_result(0)
            return cycle.done
        worker = self.workers[bus.name]
        started = self.clock.monotonic()
        cycle.done.add_done_callback(lambda _: self._record_health(cycle, started))
        for meter in meters:
            worker.post(self.poll_job(cycle, meter, bus.quantities), POLL)
        return cycle.done

    def _record_health(self, cycle: _Cycle, started: float) -> None:
        """A finished cycle in its bus's health: stored (which meters answered) or failed."""
        record = self.bus_health[cycle.bus]
        now = self.clock.monotonic()
        error = cycle.done.exception()
        if error is None and cycle.errors and not cycle.polls:
            error = cycle.errors[-1]  # no meter could be polled at all: the port
        try:
            if error is not None:
                record.cycle_failed(error, isinstance(error, BusError), now - started)
                return
            record.cycle_stored({p.meter: p.ok for p in cycle.polls}, now - started, now,
                                self.clock.now())
        finally:
            # `_polling` keeps the finished future (and through this callback, the cycle)
            # until the bus's next cycle: its polls are not needed any more.
            cycle.polls, cycle.errors = [], []

    def schedule(self) -> None:
        """Start the bus cycles that are due, one outstanding cycle per bus at most."""
        now = self.clock.monotonic()
        for bus in self.config.buses:
            running = self._polling.get(bus.name)
            if running is not None and not running.done():
                continue
            if now >= self._next_poll.get(bus.name, 0.0):
                self._next_poll[bus.name] = now + bus.poll_interval
                self.poll_now(bus.name)

    # -- head-end and technician operations -----------------------------------------------
    def apply_entries(self, entries: list[LedgerEntry], origin: str = "headend"
                      ) -> list[dict[str, object]]:
        """Top-ups and adjustments; relay restores they allow go ahead of polling."""
        added, decisions = self.on_processor(self.processor.apply_entries, entries,
                                             self.clock.now(), origin)
        self.dispatch(decisions)
        return added

    def apply_topup(self, entry: LedgerEntry, seq: int | None) -> list[dict[str, object]]:
        """A head-end top-up with its per-account sequence number (None: none given); a gap
        raises `topup_gap` for the head end to resend what is missing."""
        added, decisions = self.on_processor(self.processor.apply_topup, entry, seq,
                                             self.clock.now())
        self.dispatch(decisions)
        return added

    def set_account_class(self, account: str, policy_class: str | None,
                          tier_bonus_kwh: Decimal | None = None,
                          actor: str = "headend") -> None:
        """Assign an account's policy class (None: the default policy) and household tier
        bonus (None: unchanged); an unknown class raises `UnknownPolicyClass`."""
        self.on_processor(self.processor.set_account_class, account, policy_class,
                          tier_bonus_kwh, self.clock.now(), actor)

    def dispatch(self, decisions: list[Decision], actor: str = "policy") -> None:
        """Queue relay decisions on their buses, ahead of polling (failures: the worker logs
        them at WARNING with the bus name and counts them; the outcome is stored by
        `relay_done`, so nobody waits on a future: a mass alarm of 2,048 meters does not
        allocate 2,048 of them)."""
        for decision in decisions:
            meter = self.store.meter(decision.meter)
            if meter is None or not meter.active or meter.bus not in self.workers:
                continue  # a removed meter gets no relay order
            self.workers[meter.bus].post(self.relay_job(decision, actor), RELAY)

    def operator_relay(self, meter: str, order: str, actor: str,
                       reason: str = "", force: bool = False) -> dict[str, Any]:
        """A relay order from the head end or a technician (trip, close, keep_power_on/off):
        ahead of polling on the meter's bus, confirmed, recorded as an event with who did it.
        A trip of a meter whose account class needs force (hospital) is refused without
        `force` (`Conflict`)."""
        if order == "trip":
            self.on_processor(self.processor.check_operator_trip, meter, force)
        action = meter_action(order, self.processor.policy.close_mode)
        worker = self.worker_for(meter)
        future = worker.submit(
            lambda driver: (driver.relay(meter, action), self._energy(driver, meter)), RELAY)
        try:
            relay, energy = outcome(future, OPERATION_WAIT)
        except (TimeoutError, *EXPECTED_ERRORS) as exc:  # (a timeout: withdrawn, not done)
            self.on_processor(self.processor.operator_done, meter, order, False,
                              self.clock.now(), None, str(exc), actor, reason)
            raise
        self.on_processor(self.processor.operator_done, meter, order, True, self.clock.now(),
                          relay, "", actor, reason, energy)
        return {"meter": meter, "action": order, "relay": relay}

    def record_technician(self, meter: str, action: str, relay: str | None,
                          actor: str) -> None:
        """A relay action on a meter this agent does not bill: an event saying who did it."""
        from edge_agent.prepaid.records import Event

        def write() -> None:
            with self.store.transaction():
                self.store.record_events([Event("technician_relay", "info", self.clock.now(),
                                                meter, None, {"action": action, "by": actor,
                                                              "relay": relay})])

        self.on_processor(write)

    def policy_override(self) -> dict[str, Any]:
        """Policy settings the head end changed (`set_policy`), kept across restarts."""
        import json

        return json.loads(self.store.setting("policy_override") or "{}")

    def worker_for(self, meter: str) -> BusWorker:
        record = self.store.meter(meter)
        if record is None:
            raise UnknownMeter(f"unknown meter {meter}")
        return self.workers[record.bus]

    # -- the loop -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        states = {name: record.state(now) for name, record in self.bus_health.items()}
        return {"online": True, "version": __version__, "gw": self.config.gateway_id,
                "started_at": self.started_at.isoformat(), "cycles": self.cycles,
                "meters": len(self.store.meters()),
                "buses": [{"name": b.name, "port": b.port, "protocol": b.protocol,
                           "stray_replies": getattr(self.workers[b.name].driver, "stray", 0),
                           "failed_jobs": self.workers[b.name].failures,
                           "state": states.get(b.name, health.OK)}
                          for b in self.config.buses],
                "state": health.overall(list(states.values())),
                "outbox": self.store.outbox_depth(),
                "broker": self.store.setting("broker_state", "not configured"),
                "health": self.health()}

    def health(self) -> dict[str, Any]:
        """Per bus summary for the status message (per-meter detail: `edge-agent status`):
        the stored day's counts with the live state, counters and last error of each bus."""
        now = self.clock.monotonic()
        live = {name: health.live_fields(record.summary(now))
                for name, record in self.bus_health.items()}
        buses = [{**row, **live.get(row["bus"], {})} for row in self.store.bus_health()]
        for name, fields in live.items():
            if not any(b["bus"] == name for b in buses):  # a bus with no meter yet
                buses.append({"bus": name, "meters": 0, "online": 0, "requests": 0,
                              "replies": 0, "relays_open": 0, "success_rate": None, **fields})
        return {"buses": buses}

    def stalled(self) -> list[str]:
        """Buses with no stored cycle for their stall limit (each change logged once)."""
        now = self.clock.monotonic()
        return [name for name, record in self.bus_health.items()
                if record.check(now) == health.STALLED]

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        for service in self.services:
            service.start()

    def run(self, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `stop`); SIGHUP asks for a reload."""
        if install_signals:
            signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
            signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
            signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        self.journal_events()  # from here on, every new event goes to the journal too
        self.start()
        self.notifier.ready(f"polling {len(self.workers)} bus(es)")
        log.info("edge-agent %s started: gateway %s, %d bus(es), %d meter(s)", __version__,
                 self.config.gateway_id, len(self.workers), len(self.store.meters()))
        from edge_agent.runtime.concentrator import Concentrator  # issue 13

        concentrator = Concentrator.for_agent(self)
        try:
            while not self.stop_event.is_set():
                concentrator.tick()  # frozen data, backfill, clocks, line loss: before polls
                self.schedule()
                self.note_headend()
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self.feed_watchdog()
                self.retention.tick()
                self.stop_event.wait(0.2)
        finally:
            self.shutdown()

    def note_headend(self) -> None:
        """While connected to the head end's broker, record `headend_last_seen` (once a
        minute): the offline horizon of enforcement counts from it (docs/prepaid.md)."""
        if self.link is None or not self.link.connected.is_set():
            return
        now = self.clock.monotonic()
        if now - self._headend_noted >= HEADEND_NOTE_INTERVAL:
            self._headend_noted = now
            self.store.set_headend_last_seen(self.clock.now())

    def feed_watchdog(self) -> None:
        """WATCHDOG=1 only while every bus stores cycles (a stuck bus or DB starves it; the
        notifier sends it at half systemd's WatchdogSec, not on every call)."""
        stalled = self.stalled()
        if not stalled:
            self.notifier.watchdog()
        self.journal_events()
        now = self.clock.monotonic()
        states = {name: record.state(now) for name, record in self.bus_health.items()}
        changed = states != getattr(self, "_states_shown", None)
        if changed or now - self._status_at >= HEARTBEAT:  # counting the outbox is not free
            self._status_at, self._states_shown = now, states
            self.notifier.status(self.status_line(stalled))
            self.write_heartbeat()

    def status_line(self, stalled: list[str]) -> str:
        """`systemctl status`'s STATUS=: the buses' states, cycles and the backlog."""
        now = self.clock.monotonic()
        backlog = sum(self.store.outbox_depth().values())
        states = ", ".join(f"{name} {record.state(now)}"
                           for name, record in self.bus_health.items())
        prefix = f"STALLED {', '.join(stalled)}; " if stalled else ""
        return f"{prefix}{states or 'no bus'}; {self.cycles} cycles stored, outbox {backlog}"

    def write_heartbeat(self) -> None:
        """What `edge-agent status` (another process) reads: the time, and the buses' live
        health; a heartbeat older than `HEARTBEAT_STALE` means the daemon is not running."""
        import json

        now = self.clock.monotonic()
        self.store.set_setting("heartbeat", self.clock.now().isoformat())
        self.store.set_setting("bus_health", json.dumps(
            [record.summary(now) for record in self.bus_health.values()]))

    def journal_events(self) -> None:
        """Every event stored (by polling, the head end, a technician...) also goes to the
        journal once, at the priority of its severity: failures are never only in SQLite."""
        newest = self.store.events(1)  # one row: cheap enough for every turn of the loop
        last = newest[-1]["seq"] if newest else 0
        if last <= self._events_seen:
            return
        rows = self.store.events(min(last - self._events_seen, 200))
        fresh = [r for r in rows if r["seq"] > self._events_seen]
        if fresh and fresh[0]["seq"] > self._events_seen + 1:
            log.warning("%d event(s) not shown here (see edge-agent events)",
                        fresh[0]["seq"] - self._events_seen - 1)
        for row in fresh:
            health.journal_event(row)
        self._events_seen = max(last, self._events_seen)

    def reload(self) -> list[str]:
        """Re-read the configuration file; apply what can change live, say what cannot.

        Everything is checked before anything changes: an invalid file, tariff or policy is
        refused (logged at err) and the daemon runs on as before.  Bus changes need a restart
        (the buses keep running as they are); a reload never stops the daemon."""
        try:
            new, tariffs, policy, notes = self._checked_reload()
        except EXPECTED_ERRORS as exc:
            log.error("SIGHUP: reload refused, configuration invalid (still running on the "
                      "previous one): %s", "; ".join(str(exc).splitlines()))
            return [f"refused: {exc}"]
        except Exception as exc:  # a reload must never take the daemon down
            log.error("SIGHUP: reload failed, still running on the previous configuration",
                      exc_info=exc)
            return [f"refused: {exc}"]

        def apply() -> None:  # one transaction: all of it is stored, or none
            old = self.config
            self.config = new
            self.tariffs.update(tariffs)
            with self.store.transaction():
                self.register_meters()
                self._policy_conflicts(old.policy_raw, new.policy_raw)
                self.processor.policy = policy
                self.apply_accounts(new)
                self.processor.register_max = {m.address: m.register_max
                                               for m in new.meters}
                self.processor.reload()
                if self.concentrator is not None:  # areas, multipliers, its settings
                    self.concentrator.reconfigure(new)

        def undo(config: Config, tariffs: dict[str, Tariff], policy: Any,
                 register_max: dict[str, Decimal]) -> None:
            self.config, self.processor.policy = config, policy
            self.tariffs.clear()
            self.tariffs.update(tariffs)
            self.processor.register_max = register_max
            self.processor.reload()  # (each step's own transaction rolled back)
            if self.concentrator is not None:
                self.concentrator.reconfigure(config)

        before = (self.config, dict(self.tariffs), self.processor.policy,
                  dict(self.processor.register_max))
        try:
            self.on_processor(apply)
        except Exception as exc:  # passed the checks, failed applying: back to the old one
            log.error("SIGHUP: reload failed while applying it, back on the previous "
                      "configuration: %s", exc, exc_info=None if isinstance(
                          exc, EXPECTED_ERRORS) else exc)
            self.on_processor(undo, *before)
            return [f"refused: {exc}"]
        logging.getLogger().setLevel(new.log_level.upper())
        for bus in new.buses:
            record = self.bus_health.get(bus.name)
            if record is not None:
                record.poll_interval = bus.poll_interval
        for service in self.services:
            if hasattr(service, "reload"):
                service.reload()
        notes.append("reloaded: policy, meters, tariffs, poll intervals, retention, accounts, "
                     "concentrator, head-end keys, log level")
        for note in notes:
            (log.warning if "restart" in note else log.info)("SIGHUP: %s", note)
        return notes

    def _checked_reload(self) -> tuple[Config, dict[str, Tariff], Any, list[str]]:
        """The new configuration as it can be applied live, its tariffs and policy, and the
        notes on what needs a restart; raises (a typed error) if anything is invalid."""
        import dataclasses

        from edge_agent.config import load_config

        new = load_config(self.config.source)
        tariffs = load_tariffs(new, self.store)
        known = set(tariffs) | set(self.tariffs)
        missing = sorted({m.tariff for m in new.meters} - known)
        if missing:
            raise ConfigError(f"meters use tariffs not found in {new.tariff_dir}: "
                              f"{', '.join(missing)}")
        policy = self._policy(new)
        notes = [f"agent.{key} changed: needs a restart"
                 for key in ("gateway_id", "database", "timezone", "control_socket",
                             "control_group", "metrics_port")
                 if getattr(new, key) != getattr(self.config, key)]
        if new.mqtt != self.config.mqtt:
            notes.append("[mqtt] changed: needs a restart")

        def wiring(buses: tuple[BusConfig, ...]) -> list[tuple[Any, ...]]:
            return sorted((b.name, b.port, b.protocol, b.baud, b.parity, b.stopbits,
                           b.response_timeout, b.gap, b.retries) for b in buses)

        if wiring(new.buses) != wiring(self.config.buses):
            notes.append("[[bus]] added, removed or rewired: needs a restart (buses keep "
                         "running as they were)")
            stay = [m for m in new.meters if m.bus in self.workers]
            notes += [f"meter {m.address} on new bus {m.bus}: polled after a restart"
                      for m in new.meters if m.bus not in self.workers]
            new = dataclasses.replace(new, buses=self.config.buses, meters=tuple(stay))
        return new, tariffs, policy, notes

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        """Finish the transaction in flight on every bus, then close."""
        self.notifier.stopping()
        for service in reversed(self.services):
            service.stop()
        for worker in self.workers.values():
            worker.stop()
        self.processing.shutdown(wait=True)
        self.store.set_setting("stopped_at", self.clock.now().isoformat())  # for `status`
        self.store.close()
        log.info("edge-agent stopped")
