"""`edge-agent demo`: the whole system on one machine, no hardware and no set-up.

Simulated DL/T 645 meters on a pseudo-terminal, the real daemon, a local Mosquitto broker and
the head-end simulator when `mosquitto` is installed (offline mode otherwise).  It walks through
readings, a low-balance alert, a cutoff confirmed by the meter's status word, a signed top-up
and the restore, then prints a summary and removes everything it made.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from edge_agent.config import BusConfig, Config, KeysConfig, MeterConfig, MqttConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.prepaid.money import format_money
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.records import LedgerEntry

METERS = ("000000000001", "000000000002", "000000000003")
STEP_TIMEOUT = 60.0


class Demo:
    def __init__(self, say: Callable[[str], None], use_broker: bool = True,
                 pause: Callable[[], None] = lambda: None) -> None:
        self.say = say
        self.pause = pause
        self.asked_offline = not use_broker
        self.use_broker = use_broker and shutil.which("mosquitto") is not None
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
        self.cleanups: list[Callable[[], None]] = []
        self.summary: dict[str, Any] = {"mode": "mqtt" if self.use_broker else "offline"}
        self.step_no = 0

    def step(self, text: str) -> None:
        if self.step_no:
            self.pause()
        self.step_no += 1
        self.say(f"[{self.step_no}] {text}")

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise EdgeAgentError(f"demo: timed out waiting for {what}")
            time.sleep(0.1)

    # -- the parts ------------------------------------------------------------------------
    def start_meters(self) -> Any:
        from firmware_sim.bus import SimBus, make_meters

        # One real second is one simulated hour: a 1.5 kW household uses 1.5 kWh a second.
        meters = make_meters(addresses=METERS, load_kw=Decimal("1.5"), time_scale=3600.0)
        sim = SimBus(meters, baud=9600).start()
        self.cleanups.append(sim.stop)
        self.step(f"3 simulated DL/T 645-2007 meters answer on {sim.port} (9600 8E1)")
        return sim

    def start_broker(self) -> int | None:
        if not self.use_broker:
            why = "--offline" if self.asked_offline else "mosquitto is not installed"
            self.step(f"{why}: offline mode (no head end); the gateway enforces credit by "
                      "itself all the same")
            return None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = self.tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        + ("user root\n" if os.geteuid() == 0 else ""))
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

        def stop() -> None:
            proc.terminate()
            proc.wait(10)

        self.cleanups.append(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    self.use_broker = False
                    self.summary["mode"] = "offline"
                    self.step("the local broker did not start: offline mode")
                    return None
                time.sleep(0.05)
        self.step(f"local Mosquitto broker on 127.0.0.1:{port}")
        return port

    def config(self, sim_port: str, broker_port: int | None) -> Config:
        tariffs = self.tmp / "tariffs"
        tariffs.mkdir()
        for name in ("flat.toml", "residential-tou.toml"):
            text = resources.files("edge_agent.defaults").joinpath(name).read_text()
            (tariffs / name).write_text(text)
        policy = Policy(alert_levels=(Decimal("3.00"),), alarm_grace=timedelta(0),
                        relay_backoff=0.1, close_mode="close_allowed")
        mqtt = MqttConfig()
        keys = KeysConfig(directory=str(self.tmp / "keys"),
                          headend_keys=str(self.tmp / "headend-keys"), clock_skew=60)
        if broker_port is not None:
            from edge_agent.headend.keys import KeyRing, create_pair

            create_pair(self.tmp / "keys", "headend-1")
            KeyRing(keys.headend_keys).install("headend-1", self.tmp / "keys" / "headend-1.pub")
            mqtt = replace(mqtt, enabled=True, urls=(f"mqtt://127.0.0.1:{broker_port}",),
                           reconnect_min=0.2, reconnect_max=1.0, status_interval=2.0)
        bus = BusConfig("demo-bus", sim_port, baud=9600, response_timeout=0.2, gap=0.0,
                        retries=1, poll_interval=1.0,
                        quantities=("voltage_a", "current_a", "active_power_total"))
        meters = tuple(MeterConfig(address, "demo-bus", f"household-{n}",
                                   "residential-tou" if n == 3 else "flat",
                                   initial_kwh=Decimal("0"))
                       for n, address in enumerate(METERS, start=1))
        return Config(gateway_id="demo-gw", database=str(self.tmp / "agent.db"),
                      tariff_dir=str(tariffs), control_socket=str(self.tmp / "control.sock"),
                      buses=(bus,), meters=meters, policy=policy, mqtt=mqtt, keys=keys,
                      source="<demo defaults>")

    # -- the walk-through -----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from edge_agent.runtime.assembly import build_agent

        started = time.monotonic()
        sim = self.start_meters()
        broker_port = self.start_broker()
        config = self.config(sim.port, broker_port)
        agent = build_agent(config)
        head = None
        if broker_port is not None:
            from firmware_sim.headend import HeadEnd

            head = HeadEnd("127.0.0.1", broker_port, config.gateway_id,
                           self.tmp / "keys" / "headend-1.key").start()
            self.cleanups.append(head.stop)
        # Opening balances at commissioning, before the first poll (an `opening` entry each).
        agent.apply_entries([
            LedgerEntry(f"demo-opening-{n}", f"household-{n}", "opening",
                        Decimal("4.00") if n == 1 else Decimal("500.00"), agent.clock.now())
            for n in range(1, len(METERS) + 1)], origin="commissioning")
        thread = threading.Thread(target=agent.run, kwargs={"install_signals": False},
                                  name="agent")
        thread.start()

        def stop_agent() -> None:
            agent.stop()
            thread.join(20)

        self.cleanups.append(stop_agent)
        self.step("the agent polls every second: store -> bill -> enforce -> sync")
        store = agent.store
        self.wait("readings", lambda: all(m["kwh"] not in (None, "0") and m["last_reading"]
                                          for m in store.meter_status()))
        for m in store.meter_status():
            self.say(f"    meter {m['meter']}  {m['kwh']:>8} kWh  balance {m['balance']:>10}"
                     f"  relay {m['relay']}")
        self.step("household-1 opened with 4.00 yuan and uses 1.5 kWh per (simulated) hour at "
                  "0.56 yuan/kWh; alert level 3.00")
        self.wait("a low-balance alert", lambda: store.events(types=["low_balance"]))
        alert = store.events(types=["low_balance"])[0]
        self.say(f"    low_balance: {alert['detail']}")
        self.wait("the cutoff", lambda: store.events(types=["relay_tripped"]))
        tripped = store.events(types=["relay_tripped"])[0]
        relay = sim.meter(METERS[0])
        self.step(f"credit exhausted: pre-trip alarm, then trip of {tripped['meter']}, confirmed "
                  f"by status word 3 (relay {'open' if relay.relay_open else 'closed'})")
        kwh_at_trip = relay.register(0)
        time.sleep(1.5)
        self.say(f"    register while tripped: {kwh_at_trip} -> {relay.register(0)} kWh "
                 "(no consumption)")
        owed = store.balance("household-1")
        amount = format_money(Decimal(50) - min(owed, Decimal(0)))
        how = "signed top-up command from the head end" if head else "top-up applied locally"
        self.step(f"{how}: {amount} yuan (txn demo-pay-1)")
        self.topup(agent, head, "household-1", amount, "demo-pay-1")
        self.wait("the restore", lambda: store.events(types=["relay_closed"]) and
                  not relay.relay_open)
        self.step(f"relay closed again; balance {format_money(store.balance('household-1'))}")
        self.summary["concentrator"] = self.concentrator_scene()
        time.sleep(1.0)  # let the link drain what is queued
        self.summary.update({
            "seconds": round(time.monotonic() - started, 1),
            "meters": len(METERS),
            "readings": store.readings_count(),
            "ledger_entries": len(store.ledger(limit=100000)),
            "events": {t: len(store.events(types=[t], limit=100000)) for t in (
                "low_balance", "credit_exhausted", "relay_tripped", "relay_closed")},
            "balances": {a: format_money(b) for a, b in store.balances().items()},
            "cutoff_and_restore": True,
        })
        if head is not None:
            self.summary["head_end"] = {
                "readings_received": len(head.readings()),
                "ledger_entries_received": len(head.ledger()),
                "events_received": len(head.events()),
                "seq": head.seq_report(),
            }
        return self.summary

    def concentrator_scene(self) -> dict[str, Any]:
        """Issue 13 in two steps, on a second simulated bus whose world clock the demo moves by
        days: a 2-day gateway outage billed from the meters' daily freezes, then a theft load
        on the line that only the area's total meter sees, raising the line-loss event."""
        from datetime import UTC, datetime
        from zoneinfo import ZoneInfo

        from edge_agent.clock import Clock
        from edge_agent.config import ConcentratorConfig
        from edge_agent.field.drivers import open_driver
        from edge_agent.field.transport import LineSettings
        from edge_agent.field.worker import BusWorker
        from edge_agent.prepaid.processor import Processor
        from edge_agent.prepaid.tariff import tariff_from_text
        from edge_agent.runtime.concentrator import Concentrator
        from edge_agent.store import MeterRecord, Store
        from firmware_sim.bus import SimBus, make_meters
        from firmware_sim.clock import SimClock
        from firmware_sim.total_meter import make_total_meter

        tz = ZoneInfo("Asia/Shanghai")
        world = SimClock(datetime(2026, 4, 1, 12), speed=0)

        class WorldClock(Clock):
            def now(self) -> datetime:
                return world.now().replace(tzinfo=tz).astimezone(UTC)

        homes = make_meters(3, first=11, clock=world, load_kw=Decimal("1"))
        total = make_total_meter("000000000099", homes, loss_rate=Decimal("0.03"), ct_ratio=20)
        sim = SimBus([*homes, total], baud=9600).start()
        self.cleanups.append(sim.stop)
        flat = tariff_from_text(resources.files("edge_agent.defaults").joinpath(
            "flat.toml").read_text())
        store = Store(self.tmp / "area.db")
        for n, home in enumerate(homes, 1):
            store.add_meter(MeterRecord(home.address, "area-bus", f"area-{n}", flat.id,
                                        behind=total.address),
                            Decimal(0), WorldClock().now())
        processor = Processor(store, {flat.id: flat}, Policy(), tz, "demo-gw")
        worker = BusWorker("area-bus", open_driver("dlt645-2007", LineSettings(
            sim.port, baud=9600, response_timeout=0.2, gap=0.0)))
        worker.start()
        self.cleanups.append(worker.stop)
        config = Config(buses=(BusConfig("area-bus", sim.port),), meters=tuple(
            MeterConfig(h.address, "area-bus", f"area-{n}", flat.id, behind=total.address)
            for n, h in enumerate(homes, 1)), total_meters=(MeterConfig(
                total.address, "area-bus", "", "", role="total", ct_ratio=20),),
            concentrator=ConcentratorConfig(enabled=True, clock_trust="trust"))
        conc = Concentrator(config, store, processor, {"area-bus": worker}, WorldClock(),
                            lambda fn, *args: fn(*args))

        def poll() -> None:
            now = WorldClock().now()
            polls = worker.submit(lambda d: [d.poll(h.address, (), now) for h in homes]
                                  ).result(STEP_TIMEOUT)
            processor.process(polls, now)

        poll()
        self.step("a transformer area on a second bus: a total meter (CT 20) and 3 households;"
                  " the gateway goes down for 2 days")
        world.advance_to(datetime(2026, 4, 3, 9))
        for future in conc.backfill_all(3):  # what the daemon queues before its first poll
            future.result(STEP_TIMEOUT)
        poll()
        midnight = [e for e in store.ledger(limit=1000) if e["kind"] == "charge"
                    and e["ts"].endswith("T16:00:00+00:00")]
        self.say(f"    back up: {len(midnight)} charges billed at the meters' own midnights "
                 "from their daily freezes, then the live reading")
        for day in ("2026-04-01", "2026-04-02"):
            self.say(f"    {day}: " + ", ".join(f"{e['meter'][-2:]} {e['amount']}"
                                                for e in midnight if e["ts"][:10] == day))
        self.step("theft: a 2 kW load on the line that no customer meter sees")
        total.theft_kw = Decimal("2")
        world.advance_to(datetime(2026, 4, 4, 0, 10))
        for future in conc.backfill_all(3):
            future.result(STEP_TIMEOUT)
        conc.close_day(datetime(2026, 4, 2).date())
        conc.close_day(datetime(2026, 4, 3).date())
        theft, normal = store.line_losses("day")[:2]
        for loss in (normal, theft):
            self.say(f"    line loss {loss['label']}: supply {loss['supply_kwh']} kWh, "
                     f"sales {loss['sales_kwh']} kWh, rate {loss['rate']}")
        high = store.events(types=["line_loss_high"])
        self.say(f"    line_loss_high raised: {len(high)} (threshold 0.08)")
        return {"backfill_charges": len(midnight), "line_loss_high": len(high),
                "theft_rate": theft["rate"], "normal_rate": normal["rate"]}

    def topup(self, agent: Any, head: Any, account: str, amount: str, txn: str) -> None:
        if head is not None:
            # The first command must wait for the agent's session, or the broker drops it.
            self.wait("the agent's link", lambda: bool(head.status and head.status["online"]))
            result = head.call("topup", {"account": account, "amount": amount, "txn_id": txn})
            if not result or result["status"] != "ok":
                raise EdgeAgentError(f"demo: top-up {txn} was not applied: {result}")
        else:
            agent.apply_entries([LedgerEntry(txn, account, "topup", Decimal(amount),
                                             agent.clock.now())], origin="local")

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # cleaning up must go on; report what failed
                self.say(f"    (cleanup: {exc})")
        shutil.rmtree(self.tmp, ignore_errors=True)
