"""The concentrator over simulated meters on a real pty: backfill after an outage, clock sync,
line loss with theft, a negative loss, an incomplete day.

The gateway's clock follows the simulators' world clock (speed 0: time moves only when the test
moves it), real SQLite, real bus workers; jobs are run the way `tick` queues them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.clock import Clock
from edge_agent.config import BusConfig, ConcentratorConfig, Config, MeterConfig
from edge_agent.field.drivers import open_driver
from edge_agent.field.transport import LineSettings
from edge_agent.field.worker import BusWorker
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.tariff import tariff_from_text
from edge_agent.runtime.concentrator import Concentrator
from edge_agent.store import MeterRecord, Store
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.clock import SimClock
from firmware_sim.total_meter import make_total_meter

TZ = ZoneInfo("Asia/Shanghai")
TOTAL = "000000000099"
TARIFF = tariff_from_text("""
[tariff]
id = "monthly-tiers"
[energy]
type = "tiered"
period = "month"
blocks = [ { up_to = "50", price = "0.50" }, { price = "0.80" } ]
""")


class SimGatewayClock(Clock):
    """The gateway's wall clock is the simulators' world clock (local time)."""

    def __init__(self, world: SimClock) -> None:
        self.world = world

    def now(self) -> datetime:
        return self.world.now().replace(tzinfo=TZ).astimezone(UTC)

    def monotonic(self) -> float:
        return (self.world.now() - datetime(2026, 1, 1)).total_seconds()


@dataclass
class Site:
    sim: SimBus
    world: SimClock
    store: Store
    processor: Processor
    worker: BusWorker
    conc: Concentrator
    events_seen: list[str] = field(default_factory=list)

    def run(self, futures: list[Any]) -> list[Any]:
        return [f.result(60) for f in futures]

    def poll(self, meter: str, quantities: tuple[str, ...] = ()) -> None:
        now = self.conc.clock.now()
        poll = self.worker.submit(lambda d: d.poll(meter, quantities, now)).result(30)
        self.processor.process([poll], now)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return self.store.events(limit=1000, types=[kind])


@pytest.fixture
def site_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Site] = []

    def make(meters: list, customers: list[str], start: datetime, totals: tuple = (),
             ntp: bool | None = True, accounts: dict[str, str] | None = None,
             **settings: Any) -> Site:
        world = meters[0].clock
        sim = SimBus(meters, baud=9600).start()
        store = Store(tmp_path / f"agent{len(made)}.db")
        gw_clock = SimGatewayClock(world)

        def account(address: str) -> str:
            return (accounts or {}).get(address, f"acct-{address[-2:]}")

        for address in customers:  # as the daemon registers the file's meters
            store.add_meter(MeterRecord(address, "b1", account(address), TARIFF.id,
                                        behind=TOTAL if totals else None),
                            D(0), start.replace(tzinfo=TZ))
        processor = Processor(store, {TARIFF.id: TARIFF}, Policy(), TZ, "gw")
        driver = open_driver("dlt645-2007", LineSettings(sim.port, baud=9600,
                                                         response_timeout=0.15, gap=0))
        worker = BusWorker("b1", driver)
        worker.start()
        config = Config(timezone="Asia/Shanghai", buses=(BusConfig("b1", sim.port),),
                        meters=tuple(MeterConfig(a, "b1", account(a), TARIFF.id,
                                                 behind=TOTAL if totals else None)
                                     for a in customers),
                        total_meters=totals,
                        concentrator=ConcentratorConfig(enabled=True, **settings))
        conc = Concentrator(config, store, processor, {"b1": worker}, gw_clock,
                            lambda fn, *args: fn(*args), ntp=lambda: ntp)
        site = Site(sim, world, store, processor, worker, conc)
        made.append(site)
        return site

    yield make
    for site in made:
        site.worker.stop()
        site.sim.stop()
        site.store.close()


def charges(site: Site, account: str) -> list[dict[str, Any]]:
    return [e for e in site.store.ledger(account) if e["kind"] == "charge"]


def two_day_outage(site_factory: Any, watch: bool = False,
                   before: Any = None) -> tuple[Site, str]:
    """One meter at 1 kW from 28 March 12:00: a baseline poll, a poll on 30 March 04:00 (40
    kWh, all in the first block; `watch` looks at it), then the gateway goes down, the load
    triples from 31 March, and it is back on 1 April 10:00 (54 hours later), nothing read
    yet.  `before(site)` runs before the first poll."""
    start = datetime(2026, 3, 28, 12)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("1"))
    a1 = meters[0].address
    site = site_factory(meters, [a1], start)
    if before is not None:
        before(site)
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 3, 30, 4))
    site.poll(a1)
    if watch:
        site.conc.watch()
    site.sim.advance_to(datetime(2026, 3, 31))
    meters[0].load_kw = D("3")
    site.sim.advance_to(datetime(2026, 4, 1, 10))
    return site, a1


def test_two_day_outage_is_billed_from_the_freezes_across_the_tier_and_month(
        site_factory: Any) -> None:
    site, a1 = two_day_outage(site_factory)
    site.run(site.conc.backfill_all(3))  # `tick` queues this ahead of the first poll
    site.poll(a1)
    billed = charges(site, "acct-01")[1:]
    assert [(D(e["amount"]), e["ts"], e["detail"]["register"]) for e in billed] == [
        (D("-13.00"), "2026-03-30T16:00:00+00:00", "60.00"),  # 10 x 0.5 + 10 x 0.8 to 31 Mar
        (D("-57.60"), "2026-03-31T16:00:00+00:00", "132.00"),  # 72 x 0.8 on 31 March
        (D("-15.00"), "2026-04-01T02:00:00+00:00", "162.00"),  # April: first block again
    ]
    assert len({e["id"] for e in billed}) == 3
    (backfill,) = site.events("frozen_backfill")
    assert backfill["detail"]["days"] == ["2026-03-30", "2026-03-31"]
    # the 00:05 read and a second backfill find nothing new and bill nothing
    site.run(site.conc.backfill_all(3))
    site.run(site.conc.backfill_all(1))
    assert len(charges(site, "acct-01")) == 4
    assert site.store.freeze_days(a1, date(2026, 3, 1)) >= {date(2026, 3, 30),
                                                            date(2026, 3, 31)}


def test_long_outage_bills_the_month_boundary_from_the_settlement_freeze(
        site_factory: Any) -> None:
    start = datetime(2026, 3, 20, 12)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("1"))
    a1 = meters[0].address
    site = site_factory(meters, [a1], start)
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 3, 25, 12))
    site.poll(a1)  # 120 kWh: 50 x 0.5 + 70 x 0.8
    site.sim.advance_to(datetime(2026, 4, 6, 10))  # 12 days down; 3 daily freezes kept
    site.run(site.conc.backfill_all(3))
    stamps = [e["ts"][:16] for e in charges(site, "acct-01")]
    assert stamps == ["2026-03-25T04:00", "2026-03-31T16:00",  # the 1 April settlement
                      "2026-04-03T16:00", "2026-04-04T16:00", "2026-04-05T16:00"]
    march, april = charges(site, "acct-01")[1:3]
    assert D(march["amount"]) == D("-124.80")  # 156 kWh of March, all above the block
    assert D(april["amount"]) == D("-42.60")  # 72 kWh: 50 x 0.5 + 22 x 0.8, from 1 April


def test_gap_billed_before_the_freezes_were_read_is_corrected_by_a_new_entry(
        site_factory: Any) -> None:
    site, a1 = two_day_outage(site_factory, watch=True)
    site.poll(a1)  # the freezes were not read first: 122 kWh billed in proportion to time
    site.conc.watch()  # sees the gap
    (gap_charge,) = charges(site, "acct-01")[1:]
    site.run(site.conc.backfill_all(3))
    ledger = site.store.ledger("acct-01")
    (fix,) = [e for e in ledger if e["kind"] == "adjustment"]
    assert fix["id"] == "gw:frozen-correction:000000000001:2"
    assert D(gap_charge["amount"]) + D(fix["amount"]) == D("-85.60")  # 13.00 + 57.60 + 15.00
    assert [e for e in ledger if e["id"] == gap_charge["id"]] == [gap_charge]  # not edited
    assert site.processor.billing[a1].tier.used == D(30)  # April's 30 kWh, as frozen
    site.run(site.conc.backfill_all(3))
    assert len(site.store.ledger("acct-01")) == len(ledger)  # corrected once
    (event,) = site.events("frozen_correction")
    assert event["detail"]["amount"] == fix["amount"]


def test_drifting_meter_is_synced_and_the_event_raised_once(site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 14, 20)
    meters = make_meters(3, clock=SimClock(start, speed=0))
    drifting, far, good = meters
    drifting.drift_ppm = 500.0  # gains 43 s a day
    far.clock_offset = timedelta(minutes=-20)  # beyond what a broadcast may move
    far.broadcast_max_shift = timedelta(minutes=5)
    site = site_factory(meters, [m.address for m in meters], start)
    site.sim.advance(timedelta(days=3))  # 14:20 three days later: 130 s ahead
    deviations = site.run(site.conc.clocks_all(sync=False))[0]
    assert round(deviations[drifting.address]) == 129 and deviations[good.address] == 0
    assert {e["meter"] for e in site.events("clock_deviation")} == {drifting.address,
                                                                    far.address}
    site.run(site.conc.clocks_all(sync=True))
    for meter in meters:
        off = meter.now() - site.world.now()
        assert abs(off) < timedelta(seconds=2), (meter.address, off)
    site.run(site.conc.clocks_all(sync=False))
    site.run(site.conc.clocks_all(sync=True))
    assert len(site.events("clock_deviation")) == 2  # once per meter, not per read
    assert {e["meter"] for e in site.events("clock_ok")} == {drifting.address, far.address}
    assert site.store.setting(f"clock_broadcast:{site.sim.port}") == "2026-04-04"


def test_no_sync_while_the_gateway_clock_is_untrusted(site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 14, 20)
    meters = make_meters(1, clock=SimClock(start, speed=0))
    meters[0].clock_offset = timedelta(seconds=90)
    site = site_factory(meters, [meters[0].address], start, ntp=False)
    site.run(site.conc.clocks_all(sync=True))
    site.run(site.conc.clocks_all(sync=True))
    assert meters[0].now() - site.world.now() == timedelta(seconds=90)
    (refused,) = site.events("clock_sync_refused")
    assert "not NTP-synchronised" in refused["detail"]["reason"]


def area_site(site_factory: Any, start: datetime, customers: list[Any],
              configured: list[Any] | None = None, ct: int = 1,
              total: dict[str, Any] | None = None, **site: Any) -> Site:
    """A transformer area: `customers` behind the total meter TOTAL on bus b1 (`total`: its
    simulator's fields: loss, theft, CT), those `configured` (all by default) in agent.toml,
    the total meter with CT ratio `ct`; `site`: more keywords for the site."""
    meter = make_total_meter(TOTAL, customers, **(total or {}))
    totals = (MeterConfig(TOTAL, "b1", "", "", role="total", ct_ratio=ct),)
    return site_factory([*customers, meter],
                        [c.address for c in (customers if configured is None else configured)],
                        start, totals=totals, **site)


def area(site_factory: Any, theft_kw: D = D(0), sim_ct: int = 1, ct: int = 1,
         silent: bool = False) -> tuple[Site, list[dict[str, Any]]]:
    start = datetime(2026, 4, 1, 12)
    clock = SimClock(start, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("1"))
    site = area_site(site_factory, start, customers, ct=ct, total={
        "loss_rate": D("0.03"), "theft_kw": theft_kw, "ct_ratio": sim_ct})
    if silent:
        customers[2].fault = "silent"
    site.sim.advance_to(datetime(2026, 4, 3, 0, 10))
    site.run(site.conc.backfill_all(3))
    site.conc.close_day(date(2026, 4, 2))
    return site, site.store.line_losses(period="day")


def test_normal_area_loss_is_computed_from_the_freezes(site_factory: Any) -> None:
    site, (loss,) = area(site_factory)
    assert (loss["supply_kwh"], loss["sales_kwh"], loss["rate"]) == ("74.16", "72.00",
                                                                     "0.0291")
    assert not (loss["incomplete"] or loss["negative"] or loss["over_threshold"])
    assert site.events("line_loss_high") == []
    assert [k for _, k, _ in site.store.pending(100) if k == "lineloss"] == ["lineloss"]


def test_theft_load_raises_the_line_loss_event(site_factory: Any) -> None:
    site, (loss,) = area(site_factory, theft_kw=D("0.5"))
    assert loss["over_threshold"] and D(loss["rate"]) > D("0.08")
    (event,) = site.events("line_loss_high")
    assert event["meter"] == TOTAL and event["detail"]["label"] == "2026-04-02"
    assert event["detail"]["start"] == "2026-04-01T16:00:00Z"


def test_multiplier_error_is_flagged_as_negative_loss(site_factory: Any) -> None:
    site, (loss,) = area(site_factory, sim_ct=2, ct=1)  # the CT is 2, the config says 1
    assert loss["negative"] and D(loss["loss_kwh"]) < 0
    assert [e["type"] for e in site.events("line_loss_negative")] == ["line_loss_negative"]


def test_missing_customer_makes_the_day_incomplete(site_factory: Any) -> None:
    site, (loss,) = area(site_factory, theft_kw=D("3"), silent=True)
    assert loss["incomplete"] and loss["missing"] == 1 and loss["rate"] is None
    assert site.events("line_loss_high") == []  # never judged on partial data


def test_daily_usage_per_account(site_factory: Any) -> None:
    site, _ = area(site_factory)
    (day,) = site.store.usage("acct-01")
    assert (day["day"], day["kwh"], day["tier"]["block"]) == ("2026-04-02", "24.00", 1)
    assert sum(D(v) for v in day["rates"].values()) == D("24.00")


def test_an_account_with_two_meters_gets_one_usage_day_summing_both(
        site_factory: Any) -> None:
    """The head end keys a usage day by (gw, account, day): an account with two meters gets
    one record, both meters' kWh summed, the account's cost once, each meter's part listed;
    closing the day again sends nothing (the second meter used to overwrite the first, and
    both were sent again at every close)."""
    start = datetime(2026, 4, 1, 12)
    clock = SimClock(start, speed=0)
    meters = make_meters(2, clock=clock, load_kw=D("1"))
    meters[1].load_kw = D("0.5")
    home = {m.address: "acct-home" for m in meters}
    site = site_factory(meters, [m.address for m in meters], start, accounts=home)
    site.sim.advance_to(datetime(2026, 4, 3, 0, 10))
    site.run(site.conc.backfill_all(3))
    site.conc.close_day(date(2026, 4, 2))
    site.conc.close_day(date(2026, 4, 2))  # closed again (a restart): nothing new
    (day,) = site.store.usage("acct-home")
    assert (day["day"], day["kwh"], day["meter"]) == ("2026-04-02", "36.00", None)
    assert [(m["meter"], m["kwh"]) for m in day["meters"]] == [
        (meters[0].address, "24.00"), (meters[1].address, "12.00")]
    assert sum(D(v) for v in day["rates"].values()) == D("36.00")
    # tiers are counted per meter: each meter's own block position, none at the top
    assert day["tier"] is None and [m["tier"]["block_used"] for m in day["meters"]] == [
        "36.00", "18.00"]
    assert D(day["cost"]) == D("18.00")  # 24 + 12 kWh in block 1 at 0.50, counted once
    assert day["tariff"] == TARIFF.id and day["missing_meters"] == []
    assert queued(site)["usage"] == [("acct-home", "2026-04-02")]


def test_anomalies_from_what_the_polls_stored(site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 9)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("1"))
    meter, a1 = meters[0], meters[0].address
    site = site_factory(meters, [a1], start)

    def cycle(hours: float = 1) -> list[str]:
        site.sim.advance(timedelta(hours=hours))
        site.poll(a1, ("active_power_total",))
        seen = len(site.store.events(limit=1000))
        site.conc.watch()
        return [e["type"] for e in site.store.events(limit=1000)[seen:]]

    assert cycle() == [] and cycle() == []  # 1 kWh an hour at 1 kW: normal
    meter.add_energy(D("15"))  # the register jumps: 16 kWh in an hour at 1 kW
    assert cycle() == ["register_too_fast"]
    assert cycle() == []  # back to normal
    meter.time_scale = 0.0  # the register stops while 1 kW flows
    assert cycle() == ["register_stopped"]
    assert site.store.meter_problems() == {a1: ["register_stopped"]}  # what `status` shows
    assert cycle() == []  # raised once while it lasts
    meter.time_scale = 1.0
    assert cycle() == [] and site.store.meter_problems() == {}  # cleared
    meter.time_scale = 0.0
    assert cycle() == ["register_stopped"]
    meter.alarm = True
    changes = cycle()
    assert changes[-1] == "status_change"
    (status,) = site.events("status_change")
    assert status["detail"] == {"bit": 7, "name": "pretrip_alarm", "value": 1, "word": 3}
    meter.fault = "silent"
    site.worker.driver.client.bus.settings = LineSettings(site.sim.port, baud=9600,
                                                          response_timeout=0.05, retries=0)
    raised = [kind for _ in range(4) for kind in cycle(0.25)]
    assert raised.count("read_failures") == 1
    assert site.store.meter_problems()[a1][:2] == ["offline", "read_failures"]


def settle(site: Site) -> None:
    """Tick until the bus is idle and nothing more is queued."""
    import time

    quiet = 0
    while quiet < 3:
        site.conc.tick()
        idle = site.worker.pending() == 0 and not site.worker.busy.is_set()
        quiet = quiet + 1 if idle else 0
        time.sleep(0.1)


def test_tick_backfills_closes_the_day_and_syncs_only_away_from_the_hour(
        site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 12)
    meters = make_meters(2, clock=SimClock(start, speed=0), load_kw=D("1"))
    site = site_factory(meters, [m.address for m in meters], start)
    site.sim.advance_to(datetime(2026, 4, 3, 14, 58))
    meters[1].clock_offset = timedelta(seconds=90)
    settle(site)  # start: backfill, the 00:05 read, the 00:15 backfill, a clock read
    assert site.store.freeze_days(meters[0].address, date(2026, 3, 1)) == {
        date(2026, 4, 1), date(2026, 4, 2)}
    assert [u["day"] for u in site.store.usage("acct-01")] == ["2026-04-02"]  # day closed
    assert meters[1].now() - site.world.now() == timedelta(seconds=90)  # 14:58: no sync
    assert len(site.events("clock_deviation")) == 1
    site.sim.advance_to(datetime(2026, 4, 3, 15, 10))
    settle(site)
    assert abs(meters[1].now() - site.world.now()) < timedelta(seconds=2)  # synced at 15:10
    assert len(site.events("clock_ok")) == 1
    site.sim.advance_to(datetime(2026, 4, 3, 15, 20))
    settle(site)  # nothing due: no more clock reads within the hour
    assert len(site.store.meter_clocks()) == 2 and len(site.events("clock_ok")) == 1


def test_quarter_hour_line_loss_and_theft_raised_once(site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 10, 0)
    clock = SimClock(start, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("2"))
    site = area_site(site_factory, start, customers, ct=5, total={
        "loss_rate": D("0.03"), "theft_kw": D("1"), "ct_ratio": 5})
    for minutes in (0, 15, 30, 45):
        site.sim.advance_to(start + timedelta(minutes=minutes))
        settle(site)
    first, second = sorted(site.store.line_losses(period="15min"), key=lambda r: r["start"])
    assert first["label"] == "2026-04-01T10:00" and not first["incomplete"]
    # 3 x 2 kW x 1.03 + 1 kW theft over 15 minutes = 1.795 kWh primary, 0.359 on the register
    # (CT 5), shown as 0.35 (0.01 kWh resolution): supply 1.75 kWh; sales 1.5 kWh
    assert D(first["supply_kwh"]) == D("1.75") and first["sales_kwh"] == "1.50"
    assert first["over_threshold"] and second["over_threshold"]
    assert len(site.events("line_loss_high")) == 1  # raised once while it lasts


def restarted(site: Site) -> Site:
    """The gateway restarted: the same database file reopened, a new processor and
    concentrator (nothing kept in memory), the same meters and bus."""
    site.store.close()
    store = Store(site.store.path)
    processor = Processor(store, {TARIFF.id: TARIFF}, Policy(), TZ, "gw")
    conc = Concentrator(site.conc.config, store, processor, {"b1": site.worker},
                        site.conc.clock, lambda fn, *args: fn(*args), ntp=lambda: True)
    return Site(site.sim, site.world, store, processor, site.worker, conc)


def queued(site: Site) -> dict[str, list[tuple[Any, ...]]]:
    """Keys of the `lineloss` and `usage` messages waiting in the outbox, in order."""
    import json

    out: dict[str, list[tuple[Any, ...]]] = {"lineloss": [], "usage": []}
    for _, kind, payload in site.store.pending(1000):
        body = json.loads(payload)
        if kind == "lineloss":
            out[kind].append((body["area"], body["period"], body["start"], body["incomplete"]))
        elif kind == "usage":
            out[kind].append((body["account"], body["day"]))
    return out


def test_a_restart_queues_no_lineloss_or_usage_twice_but_a_completed_day_again(
        site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 12)
    clock = SimClock(start, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("1"))
    site = area_site(site_factory, start, customers, total={"loss_rate": D("0.03")})
    customers[2].fault = "silent"  # its freezes are not read: the day is incomplete
    site.sim.advance_to(datetime(2026, 4, 3, 10, 0))
    settle(site)
    day = ("000000000099", "day", "2026-04-01T16:00:00Z")
    first = queued(site)
    assert first["lineloss"] == [(*day, True)]
    assert sorted(first["usage"]) == [("acct-01", "2026-04-02"), ("acct-02", "2026-04-02")]
    # the running tier position moves on before the restart (it is in the usage body)
    site.sim.advance_to(datetime(2026, 4, 3, 11, 0))
    for meter in customers[:2]:
        site.poll(meter.address)
    site = restarted(site)
    try:
        settle(site)  # the day is closed again, from the same freezes: nothing new
        assert queued(site) == first
        customers[2].fault = None  # back: a backfill completes the day, which is news
        site.sim.advance_to(datetime(2026, 4, 3, 11, 30))
        site = restarted(site)
        settle(site)
        again = queued(site)
        assert again["lineloss"] == [(*day, True), (*day, False)]  # changed: sent, last wins
        assert sorted(again["usage"]) == sorted([*first["usage"], ("acct-03", "2026-04-02")])
        (loss,) = site.store.line_losses(period="day")
        assert not loss["incomplete"] and loss["missing"] == 0
    finally:
        site.store.close()


def test_quarter_reads_are_timed_and_a_late_read_makes_the_quarter_incomplete(
        site_factory: Any) -> None:
    start = datetime(2026, 4, 1, 10, 0)
    clock = SimClock(start, speed=0)
    customers = make_meters(2, clock=clock, load_kw=D("2"))
    site = area_site(site_factory, start, customers,
                     total={"loss_rate": D("0.03"), "theft_kw": D("1")}, quarter_skew=30)
    for minutes in (0, 15, 30):
        site.sim.advance_to(start + timedelta(minutes=minutes))
        settle(site)
    boundary = datetime(2026, 4, 1, 10, 15, tzinfo=TZ)
    times = site.store.quarter_times(boundary)
    assert sorted(times) == sorted([TOTAL, *(c.address for c in customers)])
    assert all(t == boundary for t in times.values())  # the world clock stood still
    (on_time,) = site.store.line_losses(period="15min")
    assert not on_time["incomplete"] and on_time["over_threshold"]
    # the next quarter's closing read of one customer came 45 s after its boundary
    closing = datetime(2026, 4, 1, 10, 45, tzinfo=TZ)
    values = {m: v + D("1") for m, v in site.store.quarter_values(boundary
                                                                   + timedelta(minutes=15)).items()}
    site.conc._record_quarter(closing, values, {
        **{m: closing for m in values}, customers[1].address: closing + timedelta(seconds=45)})
    site.conc.quarter_loss(datetime(2026, 4, 1, 10, 30, tzinfo=TZ))
    late = next(r for r in site.store.line_losses(period="15min")
                if r["label"].endswith("10:30"))
    assert late["incomplete"] and late["rate"] is None
    assert late["late_meters"] == [customers[1].address]
    assert late["reason"] == "1 meter(s) read more than 30 s from the period's boundary"


def test_a_concentrator_switched_off_clears_the_conditions_it_held(site_factory: Any) -> None:
    from dataclasses import replace

    start = datetime(2026, 4, 1, 9)
    meters = make_meters(1, clock=SimClock(start, speed=0))
    site = site_factory(meters, [meters[0].address], start)
    with site.store.transaction():
        site.store.save_raised({meters[0].address: ["register_stopped"]})  # a former run
    assert site.store.meter_problems() == {meters[0].address: ["register_stopped"]}
    off = replace(site.conc.config, concentrator=ConcentratorConfig(enabled=False))
    conc = Concentrator(off, site.store, site.processor, {"b1": site.worker}, site.conc.clock,
                        lambda fn, *args: fn(*args))
    conc.tick()
    assert site.store.meter_problems() == {}


def test_backfill_and_correction_count_the_household_tier_bonus(site_factory: Any) -> None:
    """An account with a household tier bonus (20 kWh: the first block is 70 kWh) is billed
    with it by the polls; the freezes of a gap, and the repricing of a gap, must be too."""
    def outage(read_freezes_first: bool) -> Site:
        site, a1 = two_day_outage(site_factory, watch=True, before=lambda site:
                                  site.processor.set_account_class("acct-01", None, D(20)))
        if read_freezes_first:
            site.run(site.conc.backfill_all(3))
            site.poll(a1)
        else:
            site.poll(a1)
            site.conc.watch()
            site.run(site.conc.backfill_all(3))
        return site

    # 20 kWh to 31 March in the first block (10.00), 31 March: 10 x 0.5 + 62 x 0.8 (54.60),
    # April: 30 x 0.5 (15.00)
    site = outage(read_freezes_first=True)
    assert [D(e["amount"]) for e in charges(site, "acct-01")[1:]] == [
        D("-10.00"), D("-54.60"), D("-15.00")]
    site = outage(read_freezes_first=False)
    assert site.store.balance("acct-01") == D("-20.00") - D("79.60")


def test_freezes_before_a_meters_first_reading_are_not_billed(site_factory: Any) -> None:
    """A meter registered without an initial reading (a gateway rolled out over meters in
    service, a meter moved from another house) is billed from its first reading on: the
    freezes of the days before are not the new account's consumption."""
    start = datetime(2026, 4, 1, 10)
    meters = make_meters(1, clock=SimClock(start - timedelta(days=5), speed=0),
                         load_kw=D("1"))
    a1 = meters[0].address
    site = site_factory(meters, [], start)
    site.sim.advance_to(start)  # five days of consumption before this gateway knew it
    site.store.add_meter(MeterRecord(a1, "b1", "acct-01", TARIFF.id))
    site.processor.reload()
    site.run(site.conc.backfill_all(3))  # at start, ahead of the first poll
    site.poll(a1)  # the baseline
    site.sim.advance_to(start + timedelta(hours=2))
    site.poll(a1)
    assert [D(e["amount"]) for e in charges(site, "acct-01")] == [D("-1.00")]  # 2 kWh
    assert site.events("frozen_backfill") == []


def test_a_fast_meter_clock_raises_no_register_decrease_at_midnight(site_factory: Any) -> None:
    """A meter 8 minutes fast freezes at 23:52 of the gateway's clock; a poll at 23:57 has
    billed past that register, so the freeze (stamped 00:00 by the meter) lies before the
    last billed reading in energy: not a register that went backwards (a tamper sign)."""
    start = datetime(2026, 4, 1, 12)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("6"),
                         clock_offset=timedelta(minutes=8))
    a1 = meters[0].address
    site = site_factory(meters, [a1], start)
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 4, 1, 23, 57))
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 4, 2, 0, 5))
    site.run(site.conc.backfill_all(1))  # the 00:05 read of the freeze just made
    site.poll(a1)
    assert site.events("register_decrease") == []
    # 12:00 to 00:05 at 6 kW: 72.50 kWh, 50 x 0.50 + 22.50 x 0.80
    assert sum(D(e["amount"]) for e in charges(site, "acct-01")) == D("-43.00")


def test_a_relay_order_goes_ahead_of_the_rest_of_a_bus_backfill(site_factory: Any) -> None:
    """A backfill reads every meter of the bus in one job (minutes on a long bus at 2400
    baud); a relay order (a restore after a top-up, a head-end trip) must not wait for all
    of it: it runs between two meters, as it runs between two transactions of a poll."""
    from edge_agent.field.worker import RELAY

    start = datetime(2026, 3, 28, 12)
    meters = make_meters(3, clock=SimClock(start, speed=0), load_kw=D("1"))
    site = site_factory(meters, [m.address for m in meters], start)
    for meter in meters:
        site.poll(meter.address)
    site.sim.advance_to(datetime(2026, 3, 31, 10))
    order: list[str] = []
    relay: list[Any] = []
    apply = site.conc.on_processor

    def on_processor(fn: Any, *args: Any) -> Any:
        if fn.__name__ == "apply_freezes":
            order.append(f"freezes {args[0]}")
            if not relay:  # the order arrives while the first meter's freezes are applied
                relay.append(site.worker.submit(
                    lambda d: order.append(f"relay {d.relay(meters[2].address, 'trip')}"),
                    RELAY))
        return apply(fn, *args)

    site.conc.on_processor = on_processor
    site.run(site.conc.backfill_all(3))
    relay[0].result(10)
    assert order == [f"freezes {meters[0].address}", "relay open",
                     f"freezes {meters[1].address}", f"freezes {meters[2].address}"]


def test_a_concentrator_switched_off_by_sighup_clears_the_conditions_it_held(
        site_factory: Any) -> None:
    """The concentrator raised a theft (line_loss_high on the area's total meter); the
    operator switches it off and sends SIGHUP: `status` must not show the condition for
    good (nothing watches it any more)."""
    from dataclasses import replace

    start = datetime(2026, 4, 1, 10, 0)
    clock = SimClock(start, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("2"))
    site = area_site(site_factory, start, customers, total={"theft_kw": D("1")})
    for minutes in (0, 15, 30):
        site.sim.advance_to(start + timedelta(minutes=minutes))
        settle(site)
    assert "line_loss_high" in site.store.meter_problems()[TOTAL]
    site.conc.reconfigure(replace(site.conc.config,
                                  concentrator=ConcentratorConfig(enabled=False)))
    site.conc.tick()
    assert TOTAL not in site.store.meter_problems()


def test_a_backfilled_days_usage_carries_that_days_cost(site_factory: Any) -> None:
    """Freezes are billed at their moment: the charge of 31 March is stamped 1 April 00:00,
    the end of its interval.  The usage message of 31 March (SMS, the customer's app) must
    show 31 March's cost, not the 30th's."""
    site, _ = two_day_outage(site_factory)
    site.run(site.conc.backfill_all(3))
    site.conc.close_day(date(2026, 3, 31))
    (day,) = site.store.usage("acct-01")
    assert (day["day"], day["kwh"], D(day["cost"])) == ("2026-03-31", "72.00", D("57.60"))


def test_a_settlement_freeze_at_noon_is_not_kept_as_a_days_closing_freeze(
        site_factory: Any) -> None:
    """Meters that settle on the 1st at 12:00: after a long outage the settlement freeze
    bills the month boundary, but it is no daily freeze.  Kept as the freeze closing 1 April
    it would make the usage and line loss of 1 and 2 April half a day off, and the real
    freeze of 1 April would never be read."""
    start = datetime(2026, 3, 20, 12)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("1"),
                         settlement_hour=12)
    a1 = meters[0].address
    site = site_factory(meters, [a1], start, settlement_hour=12)
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 3, 25, 12))
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 4, 6, 10))  # 12 days down; 3 daily freezes read
    site.run(site.conc.backfill_all(3))
    assert "2026-04-01T04:00" in [e["ts"][:16] for e in charges(site, "acct-01")]  # 12:00
    assert all(f.at.time() == datetime.min.time()
               for day in (date(2026, 3, 31), date(2026, 4, 1))
               for f in site.store.freezes_of_day(day).values())


def test_a_gap_is_repriced_under_the_tariff_it_was_billed_with(site_factory: Any) -> None:
    """A gap billed in proportion under a flat tariff (nothing to correct: a flat price
    does not depend on where the days fall); the head end assigns another tariff before the
    freezes are read.  The correction must not reprice the past gap at the new tariff."""
    flat = {price: tariff_from_text(f'[tariff]\nid = "flat-{price}"\n[energy]\ntype = "flat"\n'
                                    f'price = "{price}"\n') for price in ("0.50", "1.00")}
    start = datetime(2026, 3, 28, 12)
    meters = make_meters(1, clock=SimClock(start, speed=0), load_kw=D("1"))
    a1 = meters[0].address
    site = site_factory(meters, [a1], start)
    site.processor.tariffs.update({t.id: t for t in flat.values()})
    site.store.set_meter_tariff(a1, "flat-0.50")
    site.processor.reload()
    site.poll(a1)
    site.sim.advance_to(datetime(2026, 3, 30, 4))
    site.poll(a1)
    site.conc.watch()
    site.sim.advance_to(datetime(2026, 4, 1, 10))
    site.poll(a1)  # the gap: 54 kWh at 0.50, in proportion
    site.conc.watch()
    site.store.set_meter_tariff(a1, "flat-1.00")  # assign_tariff, from now on
    site.processor.reload()
    site.run(site.conc.backfill_all(3))
    assert [e for e in site.store.ledger("acct-01") if e["kind"] == "adjustment"] == []
    assert site.store.balance("acct-01") == D("-0.50") * (40 + 54)


def headend(site: Site) -> Any:
    """What the operations need of the agent, over the site's store and processor."""
    from types import SimpleNamespace

    return SimpleNamespace(store=site.store, config=site.conc.config, processor=site.processor,
                           tariffs={TARIFF.id: TARIFF}, clock=site.conc.clock)


def test_a_meter_the_head_end_adds_behind_the_total_meter_counts_in_the_areas_sales(
        site_factory: Any) -> None:
    """A meter added by the head end's `add_meter` with `behind`: its energy is the area's
    sales, not loss (it used to be left out, and its use raised a false line_loss_high)."""
    from edge_agent.runtime import operations

    start = datetime(2026, 4, 1, 12)
    clock = SimClock(start, speed=0)
    customers = make_meters(3, clock=clock, load_kw=D("1"))
    site = area_site(site_factory, start, customers, customers[:2],
                     total={"loss_rate": D("0.03")})
    added = customers[2].address
    plan = operations.add_meter(headend(site), {
        "meter": added, "bus": "b1", "account": "acct-new", "tariff": TARIFF.id,
        "initial_kwh": D("0.00"), "behind": TOTAL}, operations.Context("headend:h1"))
    with site.store.transaction():
        assert plan.apply is not None and plan.apply()["behind"] == TOTAL
    assert site.store.meter(added).behind == TOTAL
    site.sim.advance_to(datetime(2026, 4, 3, 0, 10))
    site.run(site.conc.backfill_all(3))
    site.conc.close_day(date(2026, 4, 2))
    (loss,) = site.store.line_losses(period="day")
    assert (loss["customers"], loss["sales_kwh"], loss["rate"]) == (3, "72.00", "0.0291")
    assert not (loss["incomplete"] or loss["over_threshold"])
    assert site.events("line_loss_high") == []


def test_a_replaced_meter_keeps_its_area_and_the_area_complete(site_factory: Any) -> None:
    """`commission replace`: the new meter inherits `behind`, the old one leaves the area (it
    no longer answers): the days after the swap are complete (they stayed incomplete, the new
    meter's energy counted as loss, until agent.toml was edited)."""
    from edge_agent.runtime import operations

    start = datetime(2026, 4, 1, 12)
    clock = SimClock(start, speed=0)
    customers = make_meters(4, clock=clock, load_kw=D("1"))
    old, new = customers[2], customers[3]
    new.load_kw = D(0)  # on the shelf until the swap
    site = area_site(site_factory, start, customers, customers[:3],
                     total={"loss_rate": D("0.03")})
    site.sim.advance_to(datetime(2026, 4, 2, 12))
    old.load_kw, new.load_kw = D(0), D("1")  # the swap: the load moves to the new meter
    old.fault = "silent"  # taken off the wall
    write, _ = operations.commission(
        site.store, site.conc.config, {TARIFF.id},
        {"action": "replace", "old": old.address, "new": new.address,
         "old_final_kwh": "24.00", "new_initial_kwh": "0.00"},
        "technician:tester", site.conc.clock.now(), site.processor)
    with site.store.transaction():
        assert write()["behind"] == TOTAL
    site.processor.reload()
    assert site.store.meter(new.address).behind == TOTAL
    site.sim.advance_to(datetime(2026, 4, 4, 0, 10))
    site.run(site.conc.backfill_all(3))
    site.conc.close_day(date(2026, 4, 2))  # the day of the swap
    site.conc.close_day(date(2026, 4, 3))
    days = {x["label"]: x for x in site.store.line_losses(period="day")}
    day = days["2026-04-03"]
    assert not day["incomplete"] and day["missing_meters"] == []
    assert (day["customers"], day["sales_kwh"], day["rate"]) == (3, "72.00", "0.0291")
    # the swap day: the old meter's morning is in no freeze of the area's meters now, so
    # the day is incomplete, never a false high loss
    swap = days["2026-04-02"]
    assert swap["incomplete"] and swap["missing_meters"] == [old.address]
    assert site.events("line_loss_high") == []


def test_one_meter_that_cannot_be_billed_does_not_stop_its_buss_backfill(
        site_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Meter 1's tariff is gone (a broken tariff directory): its freezes cannot be billed.
    The backfill logs that at err and goes on with meter 2, whose gap is billed."""
    import logging

    start = datetime(2026, 3, 28, 12)
    meters = make_meters(2, clock=SimClock(start, speed=0), load_kw=D("1"))
    a1, a2 = (m.address for m in meters)
    site = site_factory(meters, [a1, a2], start)
    site.poll(a1)
    site.poll(a2)
    site.sim.advance_to(datetime(2026, 3, 31, 10))  # down for three days
    site.store.set_meter_tariff(a1, "gone")
    site.processor.reload()
    with caplog.at_level(logging.ERROR, logger="edge_agent"):
        site.run(site.conc.backfill_all(3))
    assert charges(site, "acct-01") == []
    assert len(charges(site, "acct-02")) >= 2  # its freezes billed all the same
    assert any(a1 in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
