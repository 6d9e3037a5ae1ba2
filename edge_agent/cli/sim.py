"""`edge-agent sim`: simulated meters for a bench or a demo.

The only verb that imports `firmware_sim/`: the simulator never loads on a gateway that does not
ask for it.
"""

from __future__ import annotations

import signal
import sys
import threading
from decimal import Decimal
from typing import Any

import click

from edge_agent.errors import UsageError

from .root import emit, json_option, main


def _load(text: str) -> Decimal:
    """--load in kW: a non-negative decimal (a typo is a usage error, not a traceback)."""
    from edge_agent.prepaid.money import parse_decimal

    try:
        value = parse_decimal(text, "--load", places=3)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if value < 0:
        raise UsageError(f"--load {text}: must not be negative")
    return value


@main.command()
@click.option("--count", "-n", default=1, show_default=True, type=click.IntRange(1, 247))
@click.option("--address", "-a", "addresses", multiple=True,
              help="Meter address (repeat); default 000000000001 upwards.")
@click.option("--baud", default=2400, show_default=True, type=click.IntRange(1))
@click.option("--protocol", default="dlt645-2007", show_default=True,
              type=click.Choice(["dlt645-2007", "dlt645-1997", "modbus"]))
@click.option("--model", default="chint-ddsu666", show_default=True,
              help="Register map of simulated Modbus meters (unit ids 1..count).")
@click.option("--wire-timing/--no-wire-timing", default=False, show_default=True,
              help="Take bytes x 11 bits / baud per frame, as on a real line.")
@click.option("--fault", "faults", multiple=True, metavar="ADDRESS=FAULT",
              help="Switch a fault on for a meter: silent, late, corrupt_checksum, garbage, "
                   "abnormal or none.")
@click.option("--load", default="1.2", show_default=True, help="Load of each meter, kW.")
@click.option("--time-scale", default=1.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Simulated seconds per real second (energy grows faster).")
@click.option("--tcp", "tcp_port", type=click.IntRange(0, 65535), default=None,
              help="Serve on 127.0.0.1:PORT (0: any free port) instead of a pty.")
@json_option
def sim(count: int, addresses: tuple[str, ...], baud: int, protocol: str, model: str,
        wire_timing: bool, faults: tuple[str, ...], load: str, time_scale: float,
        tcp_port: int | None, as_json: bool) -> None:
    """Run simulated meters on a pseudo-terminal (or TCP) until interrupted.

    \b
    Example:
      edge-agent sim -n 8 --baud 9600 --fault 000000000003=silent
    """
    from firmware_sim.bus import SimBus, make_meters
    from firmware_sim.dlt645_meter import FAULTS

    load_kw = _load(load)
    bus: Any
    if protocol == "modbus":
        from firmware_sim.modbus_meter import ModbusSimBus, make_modbus_meters

        if tcp_port is not None:
            raise UsageError("--tcp is for DL/T 645 simulators; Modbus runs on a pty")
        modbus = make_modbus_meters(count, model, load_kw=load_kw, time_scale=time_scale)
        by_address: dict[str, Any] = {f"unit:{m.unit}": m for m in modbus}
        names = list(by_address)
    else:
        meters = make_meters(count, addresses=addresses, load_kw=load_kw,
                             time_scale=time_scale, version=protocol.rsplit("-", 1)[1])
        by_address = {m.address: m for m in meters}
        names = [m.address for m in meters]
    for spec in faults:
        address, _, fault = spec.partition("=")
        if address not in by_address or fault not in FAULTS:
            raise UsageError(f"--fault {spec!r}: need ADDRESS=FAULT (unit:N for Modbus) with a "
                             f"simulated meter and one of {', '.join(FAULTS)}")
        by_address[address].fault = fault
    if protocol == "modbus":
        bus = ModbusSimBus(modbus, baud=baud, wire_timing=wire_timing).start()
    else:
        bus = SimBus(meters, baud=baud, wire_timing=wire_timing, tcp_port=tcp_port).start()
    info = {"port": bus.port, "baud": baud, "protocol": protocol,
            "meters": names, "wire_timing": wire_timing}
    emit(info, as_json, lambda: click.echo(
        f"{len(names)} simulated {protocol} meter(s) on {bus.port} at {baud} baud: "
        + ", ".join(info["meters"])))  # type: ignore[arg-type]
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        bus.stop()
