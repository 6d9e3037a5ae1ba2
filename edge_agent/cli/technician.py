"""Technician verbs on a port: `sim`, `read`, `scan`, `relay`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click

from edge_agent.bus import Bus, LineSettings
from edge_agent.dlt645_client import RELAY_CONFIRM, Dlt645Client, relay_state
from edge_agent.errors import UsageError
from firmware_sim.dlt645_meter import FAULTS
from protocols.dlt645 import catalogue

from .root import emit, json_option, main, progress

RELAY_CHOICES = sorted([*RELAY_CONFIRM, "close_allowed", "keep_power_on", "keep_power_off"])


def line_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Port and line-setting options shared by the technician verbs."""
    options = [
        click.option("--port", "-p", required=True,
                     help="Serial device or socket://host:port of a TCP serial server."),
        click.option("--baud", default=2400, show_default=True, type=int),
        click.option("--parity", default="E", show_default=True,
                     type=click.Choice(["N", "E", "O"])),
        click.option("--timeout", default=0.5, show_default=True, type=float,
                     help="Seconds a meter may take to start its reply."),
        click.option("--retries", default=2, show_default=True, type=int),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def via_daemon(request: dict[str, Any]) -> Any | None:
    """Send a technician request to the running daemon when it owns the port; None means
    no daemon (or not its port): use the port directly."""
    from edge_agent import control
    from edge_agent.errors import ConfigError, EdgeAgentError

    from .state import current_config

    try:
        config = current_config()
    except ConfigError:
        return None
    answer = control.call(config.control_socket, request)
    if answer is None:
        return None
    if answer["ok"]:
        return answer["result"]
    if answer.get("kind") == "usage":
        if answer["error"].startswith("not_owned"):
            return None
        raise UsageError(answer["error"])
    raise EdgeAgentError(answer["error"])


def record_direct(address: str, action: str, relay: str | None, error: str = "") -> None:
    """Record a direct (daemon not running) relay action in the database, if there is one."""
    import getpass
    from datetime import UTC, datetime
    from pathlib import Path

    from edge_agent.billing import Event
    from edge_agent.errors import ConfigError
    from edge_agent.storage import Store

    from .state import current_config

    try:
        database = Path(current_config().database)
    except ConfigError:
        return
    if not database.exists():
        return
    store = Store(database)
    kind = "relay_failed" if error else "technician_relay"
    detail = {"action": action, "by": f"technician:{getpass.getuser()}", "via": "direct",
              "relay": relay}
    if error:
        detail["error"] = error
    with store.transaction():
        store.record_events([Event(kind, "warning" if error else "info", datetime.now(UTC),
                                   address, None, detail)])
    store.close()


def client_for(port: str, baud: int, parity: str, timeout: float, retries: int) -> Dlt645Client:
    if baud <= 0:
        raise UsageError(f"--baud {baud} must be positive")
    settings = LineSettings(port=port, baud=baud, parity=parity, response_timeout=timeout,
                            retries=retries)
    return Dlt645Client(Bus(settings))


@main.command()
@click.option("--count", "-n", default=1, show_default=True, type=click.IntRange(1, 247))
@click.option("--address", "-a", "addresses", multiple=True,
              help="Meter address (repeat); default 000000000001 upwards.")
@click.option("--baud", default=2400, show_default=True, type=int)
@click.option("--protocol", default="dlt645-2007", show_default=True,
              type=click.Choice(["dlt645-2007"]))
@click.option("--wire-timing/--no-wire-timing", default=False, show_default=True,
              help="Take bytes x 11 bits / baud per frame, as on a real line.")
@click.option("--fault", "faults", multiple=True, metavar="ADDRESS=FAULT",
              help=f"Switch a fault on for a meter; FAULT is one of {', '.join(FAULTS)}.")
@click.option("--load", default="1.2", show_default=True, help="Load of each meter, kW.")
@click.option("--time-scale", default=1.0, show_default=True, type=float,
              help="Simulated seconds per real second (energy grows faster).")
@click.option("--tcp", "tcp_port", type=int, default=None,
              help="Serve on 127.0.0.1:PORT (0: any free port) instead of a pty.")
@json_option
def sim(count: int, addresses: tuple[str, ...], baud: int, protocol: str, wire_timing: bool,
        faults: tuple[str, ...], load: str, time_scale: float, tcp_port: int | None,
        as_json: bool) -> None:
    """Run simulated meters on a pseudo-terminal (or TCP) until interrupted.

    \b
    Example:
      edge-agent sim -n 8 --baud 9600 --fault 000000000003=silent
    """
    from firmware_sim.bus import SimBus, make_meters

    meters = make_meters(count, addresses=addresses, load_kw=Decimal(load),
                         time_scale=time_scale)
    by_address = {m.address: m for m in meters}
    for spec in faults:
        address, _, fault = spec.partition("=")
        if address not in by_address or fault not in FAULTS:
            raise UsageError(f"--fault {spec!r}: need ADDRESS=FAULT with a simulated address "
                             f"and one of {', '.join(FAULTS)}")
        by_address[address].fault = fault
    bus = SimBus(meters, baud=baud, wire_timing=wire_timing, tcp_port=tcp_port).start()
    info = {"port": bus.port, "baud": baud, "protocol": protocol,
            "meters": [m.address for m in meters], "wire_timing": wire_timing}
    emit(info, as_json, lambda: click.echo(
        f"{len(meters)} simulated {protocol} meter(s) on {bus.port} at {baud} baud: "
        + ", ".join(info["meters"])))  # type: ignore[arg-type]
    import sys

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


@main.command()
@line_options
@click.option("--address", "-a", required=True, help="Meter address, nameplate order.")
@click.argument("quantities", nargs=-1)
@json_option
def read(port: str, baud: int, parity: str, timeout: float, retries: int, address: str,
         quantities: tuple[str, ...], as_json: bool) -> None:
    """Read named quantities or data identifiers from one meter (default: energy).

    \b
    Examples:
      edge-agent read -p /dev/ttyUSB0 -a 000000000001 energy voltage current
      edge-agent read -p /dev/ttyUSB0 -a 000000000001 00010000 --json
    """
    keys = list(quantities) or ["energy"]
    for key in keys:
        try:
            catalogue.lookup(key)
        except KeyError as exc:
            names = ", ".join(sorted(catalogue.BY_NAME))
            raise UsageError(f"{exc.args[0]}; names: {names}") from None
    rows = via_daemon({"op": "read", "port": port, "address": address, "quantities": keys})
    if rows is None:
        with client_for(port, baud, parity, timeout, retries).bus as bus:
            readings = Dlt645Client(bus).read_many(address, keys)
        rows = [{"meter": r.meter, "name": r.name, "di": r.di,
                 "value": catalogue.format_value(r.value), "unit": r.unit} for r in readings]

    def human() -> None:
        for row in rows:
            click.echo(f"{row['name']:<28} {row['di']}  {row['value']} {row['unit']}".rstrip())

    emit(rows, as_json, human)


@main.command()
@line_options
@json_option
def scan(port: str, baud: int, parity: str, timeout: float, retries: int,
         as_json: bool) -> None:
    """Discover every DL/T 645 meter on a bus (wildcard address search).

    Shows progress on stderr; a probe that nobody answers costs TIMEOUT seconds.
    """
    client = client_for(port, baud, parity, timeout, retries)
    probes = {"n": 0}

    def report(prefix: str, found: int) -> None:
        probes["n"] += 1
        if probes["n"] % 20 == 0:
            progress(f"scan: {probes['n']} probes, {found} meter(s) found")

    found = via_daemon({"op": "scan", "port": port, "timeout": timeout})
    if found is None:
        with client.bus:
            found = client.scan(timeout=timeout, progress=report)
    else:
        progress("scan: done by the running daemon")
    emit({"port": port, "meters": found, "probes": probes["n"]}, as_json,
         lambda: click.echo("\n".join(found) if found else "no meters found"))


@main.command()
@line_options
@click.option("--address", "-a", required=True, help="Meter address, nameplate order.")
@click.argument("action", type=click.Choice(RELAY_CHOICES))
@click.option("--valid-minutes", default=10, show_default=True, type=int)
@json_option
def relay(port: str, baud: int, parity: str, timeout: float, retries: int, address: str,
          action: str, valid_minutes: int, as_json: bool) -> None:
    """Trip, close, alarm or keep-power a relay and confirm it from the status word."""
    from datetime import timedelta

    from edge_agent.errors import EdgeAgentError

    answer = via_daemon({"op": "relay", "port": port, "address": address, "action": action})
    if answer is not None:
        result = {"meter": address, "action": action, "confirmed": True,
                  "relay": answer["relay"], "via": "daemon"}
    else:
        with client_for(port, baud, parity, timeout, retries).bus as bus:
            try:
                word = Dlt645Client(bus).relay(address, action,
                                               valid_for=timedelta(minutes=valid_minutes))
            except EdgeAgentError as exc:
                record_direct(address, action, None, str(exc))
                raise
        record_direct(address, action, relay_state(word))
        result = {"meter": address, "action": action, "confirmed": True,
                  "status_word_3": f"{word:04X}", "relay": relay_state(word), "via": "direct"}
    emit(result, as_json, lambda: click.echo(
        f"{action} confirmed on {address}: relay {result['relay']} ({result['via']})"))
