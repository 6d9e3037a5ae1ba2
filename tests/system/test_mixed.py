"""Modbus and DL/T 645-1997 meters in the daemon: billed and enforced like DL/T 645-2007
meters, and a mixed gateway publishing every meter's readings."""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.runtime.assembly import build_agent
from firmware_sim.bus import SimBus, make_meters
from firmware_sim.headend import HeadEnd
from firmware_sim.modbus_meter import ModbusSimBus, SimModbusMeter
from tests.helpers import REPO, contract_problems, mqtt_extra, wait_for

POLICY = """
[policy]
alert_levels = ["1.00"]
alarm_grace_minutes = 0
relay_backoff_seconds = 0.05
"""


def header(tmp: Path) -> str:
    return f"""
[agent]
gateway_id = "gw1"
database = "{tmp / 'agent.db'}"
tariff_dir = "{REPO / 'config' / 'tariffs'}"
control_socket = "{tmp / 'control.sock'}"
"""


def bus(name: str, port: str, protocol: str, parity: str = "E") -> str:
    return f"""
[[bus]]
name = "{name}"
port = "{port}"
protocol = "{protocol}"
baud = 9600
parity = "{parity}"
response_timeout = 0.2
gap = 0.0
retries = 1
poll_interval = 0.3
quantities = ["voltage", "voltage_a", "frequency"]
"""


def meter(address: str, bus_name: str, account: str, extra: str = "") -> str:
    return (f'\n[[meter]]\naddress = "{address}"\nbus = "{bus_name}"\naccount = "{account}"\n'
            f'tariff = "flat"\ninitial_kwh = "0.00"\n{extra}\n')



def test_modbus_meter_runs_down_trips_and_restores(tmp_path) -> None:
    sim_meter = SimModbusMeter(1, "chint-ddsu666", load_kw=D("36000"))
    sim = ModbusSimBus([sim_meter], baud=9600).start()
    try:
        text = (header(tmp_path) + bus("mb", sim.port, "modbus", parity="N")
                + meter("000000000011", "mb", "M1", 'unit = 1\nmodel = "chint-ddsu666"')
                + POLICY)
        (tmp_path / "agent.toml").write_text(text)
        agent = build_agent(load_config(tmp_path / "agent.toml"))
        agent.apply_entries([LedgerEntry("open-m1", "M1", "opening", D("3.00"),
                                         agent.clock.now())])
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            assert wait_for(lambda: sim_meter.relay_open), "Modbus meter never tripped"
            assert wait_for(lambda: agent.store.events(types=["relay_tripped"]))
            types = [e["type"] for e in agent.store.events(limit=500)]
            assert "low_balance" in types and "relay_tripped" in types
            assert "relay_failed" not in types  # the skipped alarm is not a failure
            at_trip = sim_meter.core.register(0)
            time.sleep(0.5)
            assert sim_meter.core.register(0) == at_trip
            owed = agent.store.balance("M1")
            agent.apply_entries([LedgerEntry("pay-m1", "M1", "topup", D("20") - owed,
                                             agent.clock.now())])
            assert wait_for(lambda: not sim_meter.relay_open), "not closed after top-up"
            assert agent.store.balance("M1") == agent.store.ledger_sum("M1")
        finally:
            agent.stop()
            runner.join(20)
    finally:
        sim.stop()


def test_mixed_gateway_publishes_every_meter(tmp_path, broker) -> None:
    dlt = SimBus(make_meters(1), baud=9600).start()
    old = SimBus(make_meters(1, first=97, version="1997"), baud=9600).start()
    mb = ModbusSimBus([SimModbusMeter(5, "eastron-sdm120")], baud=9600).start()
    try:
        text = (header(tmp_path)
                + bus("dlt", dlt.port, "dlt645-2007") + bus("old", old.port, "dlt645-1997")
                + bus("mb", mb.port, "modbus", parity="N")
                + meter("000000000001", "dlt", "A1")
                + meter("000000000097", "old", "A97")
                + meter("000000000005", "mb", "A5", 'unit = 5\nmodel = "eastron-sdm120"')
                + "\n[policy]\n" + mqtt_extra(tmp_path, broker.port))
        (tmp_path / "agent.toml").write_text(text)
        agent = build_agent(load_config(tmp_path / "agent.toml"))
        for account in ("A1", "A97", "A5"):
            agent.apply_entries([LedgerEntry(f"open-{account}", account, "opening", D("500"),
                                             agent.clock.now())])
        head = HeadEnd("127.0.0.1", broker.port, "gw1").start()
        runner = threading.Thread(target=agent.run, kwargs={"install_signals": False})
        runner.start()
        try:
            wanted = {"000000000001", "000000000097", "000000000005"}
            assert head.wait_for(lambda: {r["meter"] for r in head.readings()} >= wanted,
                                 timeout=30), {r["meter"] for r in head.readings()}
            names = {(r["meter"], r["name"]) for r in head.readings()}
            # The SDM120 map's `voltage`, published under the catalogue name (issue 11)
            assert ("000000000005", "voltage_a") in names
            assert not {n for m, n in names if m == "000000000005"} - {
                "forward_active_total", "voltage_a", "frequency", "status_word_3"}
            assert contract_problems(head.messages) == []
            assert ("000000000097", "voltage_a") in names  # DL/T 645-1997 B611
            assert ("000000000001", "status_word_3") in names
            status = {m["meter"]: m for m in agent.store.meter_status()}
            assert {status[m]["protocol"] for m in wanted} == {"dlt645-2007", "dlt645-1997",
                                                              "modbus"}
            assert all(status[m]["online"] for m in wanted)
        finally:
            agent.stop()
            runner.join(20)
            head.stop()
    finally:
        for sim in (dlt, old, mb):
            sim.stop()
