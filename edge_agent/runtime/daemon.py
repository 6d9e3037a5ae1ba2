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
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.clock import Clock
from edge_agent.config import BusConfig, Config
from edge_agent.errors import (
    EXPECTED_ERRORS,
    ConfigError,
    TariffError,
    UnknownMeter,
)
from edge_agent.field.drivers import make_driver
from edge_agent.field.worker import POLL, RELAY, TECHNICIAN, BusWorker
from edge_agent.prepaid.enforcement import Decision
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.prepaid.tariff import Tariff, load_tariff, tariff_from_text
from edge_agent.runtime.systemd import Notifier
from edge_agent.store import MeterRecord, Store
from edge_agent.store.retention import RetentionSchedule

log = logging.getLogger("edge_agent")

RELAY_ORDERS = {"trip": "trip", "keep_power_on": "keep_power",
                "keep_power_off": "keep_power_release"}  # "close" follows the policy


def load_tariffs(config: Config, store: Store | None = None) -> dict[str, Tariff]:
    """Tariff files from the tariff directory, then those pushed by the head end."""
    tariffs: dict[str, Tariff] = {}
    directory = Path(config.tariff_dir)
    if directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            tariff = load_tariff(path)
            tariffs[tariff.id] = tariff
    if store is not None:
        for tariff_id, body in store.tariffs().items():
            tariffs[tariff_id] = tariff_from_text(body, f"head-end tariff {tariff_id}")
    return tariffs


OPERATION_WAIT = 120.0  # seconds an operator request may wait for its bus


class Agent:
    """One running gateway agent."""

    def __init__(self, config: Config, clock: Clock | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier.from_environment()
        self.store = Store(config.database)
        self.tariffs = load_tariffs(config, self.store)
        self.register_meters()
        self.processor = Processor(self.store, self.tariffs, self._policy(config), config.tz,
                                   config.gateway_id)
        # One thread does all storing, billing and enforcing: a single writer, whose
        # connection alone needs the large page cache.  Bus workers hand it their polls.
        self.processing = ThreadPoolExecutor(1, thread_name_prefix="processor")
        self.workers = {b.name: BusWorker(b.name, make_driver(b, config, self._modbus_identity))
                        for b in config.buses}
        self.stop_event = threading.Event()
        self.started_at = self.clock.now()
        self.progress_at = self.clock.monotonic()  # last time a poll cycle was stored
        self.cycles = 0
        self.services: list[Any] = []  # head-end link, command handler, control socket...
        self.link: Any = None  # the head-end link, when MQTT is enabled
        self._next_poll: dict[str, float] = {}
        self._polling: dict[str, Future[Any]] = {}
        self.reload_requested = threading.Event()
        self._status_at = float("-inf")
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

    def register_meters(self) -> None:
        """Meters from the configuration; a meter already known keeps its billing state."""
        with self.store.transaction():  # one fsync for the lot, not one per meter
            self._register_meters()

    def _register_meters(self) -> None:
        for meter in self.config.meters:
            if meter.tariff not in self.tariffs:
                raise ConfigError(f"meter {meter.address}: tariff {meter.tariff!r} is not in "
                                  f"{self.config.tariff_dir}")
            known = self.store.meter(meter.address)
            record = MeterRecord(meter.address, meter.bus, meter.account, meter.tariff,
                                 protocol=self.config.bus(meter.bus).protocol,
                                 multiplier=meter.multiplier, keep_power=meter.keep_power,
                                 allowance=meter.allowance, unit=meter.unit, model=meter.model)
            initial = meter.initial_kwh if known is None else None
            self.store.add_meter(record, initial, self.clock.now() if initial is not None
                                 else None)

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
    def poll_job(self, bus: BusConfig) -> Callable[[Any], int]:
        def job(driver: Any) -> int:
            meters = [m for m in self.store.meters() if m.bus == bus.name]
            polls = [driver.poll(m.address, bus.quantities, self.clock.now()) for m in meters]
            decisions = self.on_processor(self.processor.process, polls, self.clock.now())
            self.cycles += 1
            self.progress_at = self.clock.monotonic()
            self.carry_out(decisions, driver)
            return len(polls)
        return job

    def carry_out(self, decisions: list[Decision], driver: Any, actor: str = "policy") -> None:
        """Carry out relay decisions on this bus; record each confirmed (or failed) outcome."""
        for decision in decisions:
            assert decision.action is not None
            try:
                relay = driver.relay(decision.meter, decision.action)
                ok, error = True, ""
            except EXPECTED_ERRORS as exc:
                relay, ok, error = None, False, str(exc)
                log.warning("relay %s on %s failed: %s", decision.action, decision.meter, exc)
            self.on_processor(self.processor.relay_done, decision, ok, self.clock.now(), relay,
                              error, actor)

    def poll_now(self, bus_name: str | None = None) -> list[Future[Any]]:
        """Queue a poll of one bus (or all) now; returns the futures."""
        futures = []
        for bus in self.config.buses:
            if bus_name in (None, bus.name):
                future = self.workers[bus.name].submit(self.poll_job(bus), POLL)
                self._polling[bus.name] = future
                futures.append(future)
        return futures

    def schedule(self) -> None:
        """Queue the polls that are due, one outstanding poll per bus at most."""
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

    def dispatch(self, decisions: list[Decision], actor: str = "policy") -> list[Future[Any]]:
        futures = []
        for decision in decisions:
            meter = self.store.meter(decision.meter)
            if meter is None or meter.bus not in self.workers:
                continue
            futures.append(self.workers[meter.bus].submit(
                lambda driver, d=decision: self.carry_out([d], driver, actor), RELAY))
        return futures

    def operator_relay(self, meter: str, order: str, actor: str,
                       reason: str = "") -> dict[str, Any]:
        """A relay order from the head end or a technician (trip, close, keep_power_on/off):
        ahead of polling on the meter's bus, confirmed, recorded as an event with who did it."""
        action = RELAY_ORDERS.get(order) or self.processor.policy.close_mode
        worker = self.worker_for(meter)
        try:
            relay = worker.submit(lambda driver: driver.relay(meter, action),
                                  RELAY).result(120)
        except EXPECTED_ERRORS as exc:
            self.on_processor(self.processor.operator_done, meter, order, False,
                              self.clock.now(), None, str(exc), actor, reason)
            raise
        self.on_processor(self.processor.operator_done, meter, order, True, self.clock.now(),
                          relay, "", actor, reason)
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

    def set_tariff(self, tariff_id: str, body: str) -> None:
        tariff = tariff_from_text(body, f"head-end tariff {tariff_id}")
        if tariff.id != tariff_id:
            raise TariffError([f"tariff body has id {tariff.id!r}, command says {tariff_id!r}"])
        self.store.save_tariff(tariff_id, body, self.clock.now())
        self.on_processor(self.tariffs.__setitem__, tariff_id, tariff)

    # -- the loop -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"online": True, "version": __version__, "gw": self.config.gateway_id,
                "started_at": self.started_at.isoformat(), "cycles": self.cycles,
                "meters": len(self.store.meters()),
                "buses": [{"name": b.name, "port": b.port, "protocol": b.protocol}
                          for b in self.config.buses],
                "outbox": self.store.outbox_depth(),
                "broker": self.store.setting("broker_state", "not configured"),
                "health": self.health()}

    def health(self) -> dict[str, Any]:
        """Per bus summary for the status message (per-meter detail: `edge-agent status`)."""
        return {"buses": self.store.bus_health()}

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
        self.start()
        self.notifier.ready(f"polling {len(self.workers)} bus(es)")
        log.info("edge-agent %s started: gateway %s, %d bus(es), %d meter(s)", __version__,
                 self.config.gateway_id, len(self.workers), len(self.store.meters()))
        try:
            while not self.stop_event.is_set():
                self.schedule()
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self.feed_watchdog()
                self.retention.tick()
                self.stop_event.wait(0.2)
        finally:
            self.shutdown()

    def feed_watchdog(self) -> None:
        """WATCHDOG=1 only while cycles keep being stored (a stuck bus or DB starves it)."""
        longest = max((b.poll_interval for b in self.config.buses), default=60.0)
        stalled = self.clock.monotonic() - self.progress_at > max(3 * longest, 5.0)
        if not stalled:
            self.notifier.watchdog()
        now = self.clock.monotonic()
        if now - self._status_at >= 10.0:  # counting a large outbox is not free
            self._status_at = now
            backlog = sum(self.store.outbox_depth().values())
            self.notifier.status(f"{self.cycles} cycles stored, outbox {backlog}")
            self.store.set_setting("heartbeat", self.clock.now().isoformat())

    def reload(self) -> list[str]:
        """Re-read the configuration file; apply what can change live, say what cannot."""
        from edge_agent.config import load_config

        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            log.error("reload refused, configuration invalid: %s", exc)
            return [f"refused: {exc}"]
        notes = []
        for key in ("gateway_id", "database", "timezone", "control_socket"):
            if getattr(new, key) != getattr(self.config, key):
                notes.append(f"agent.{key} changed: needs a restart")
        if [(b.name, b.port, b.protocol, b.baud) for b in new.buses] != [
                (b.name, b.port, b.protocol, b.baud) for b in self.config.buses]:
            notes.append("buses changed: needs a restart")
        if new.mqtt != self.config.mqtt:
            notes.append("[mqtt] changed: needs a restart")
        def apply() -> None:
            self.config = new
            self.tariffs.update(load_tariffs(new, self.store))
            self.register_meters()
            self.processor.policy = self._policy(new)
            self.processor.reload()

        self.on_processor(apply)
        for service in self.services:
            if hasattr(service, "reload"):
                service.reload()
        notes.append("reloaded: policy, meters, tariffs, poll intervals, retention, "
                     "head-end keys")
        for note in notes:
            log.info("SIGHUP: %s", note)
        return notes

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
        self.store.close()
        log.info("edge-agent stopped")
