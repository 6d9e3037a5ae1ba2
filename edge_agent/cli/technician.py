"""Technician verbs on a port: `read`, `scan`, `relay`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edge_agent.errors import UsageError
from edge_agent.field.dlt645 import Dlt645Client, raw_di, relay_state
from edge_agent.field.transport import Bus, LineSettings
from edge_agent.prepaid.vocabulary import ACTION_CHOICES
from protocols.dlt645 import catalogue

from .root import emit, json_option, main, progress

RELAY_CHOICES = list(ACTION_CHOICES)


def line_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Port and line-setting options shared by the technician verbs."""
    options = [
        click.option("--port", "-p", default=None,
                     help="Serial device or socket://host:port of a TCP serial server "
                          "(default for read/relay: the bus of the meter in the configuration)."),
        click.option("--baud", default=2400, show_default=True, type=click.IntRange(1)),
        click.option("--parity", default="E", show_default=True,
                     type=click.Choice(["N", "E", "O"])),
        click.option("--timeout", default=0.5, show_default=True,
                     type=click.FloatRange(0, 60, min_open=True),
                     help="Seconds a meter may take to start its reply."),
        click.option("--retries", default=2, show_default=True, type=click.IntRange(0, 10)),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def via_daemon(request: dict[str, Any]) -> Any | None:
    """Send a technician request to the running daemon when it owns the port; None means
    no daemon (or not its port): use the port directly."""
    from edge_agent.errors import ConfigError, NotOwned, from_kind
    from edge_agent.runtime import control

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
    error = from_kind(answer.get("kind", "failed"), answer["error"])
    if isinstance(error, NotOwned):
        return None
    raise error


def record_direct(address: str, action: str, relay: str | None, error: str = "") -> None:
    """Record a direct (daemon not running) relay action in the database, if there is one."""
    import getpass
    from datetime import UTC, datetime
    from pathlib import Path

    from edge_agent.errors import ConfigError
    from edge_agent.prepaid.records import Event
    from edge_agent.store import Store

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


def configured_line(address: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Without --port: the line settings of the bus the configuration puts the meter on
    (options given on the command line still win)."""
    from click.core import ParameterSource

    from edge_agent.errors import ConfigError

    from .state import current_config

    if address is None:
        raise UsageError("give --port (or --address of a configured meter)")
    try:
        config = current_config()
    except ConfigError as exc:
        raise UsageError(f"give --port: no configuration to find meter {address} in "
                         f"({exc})") from None
    meter = next((m for m in config.meters if m.address == address), None)
    if meter is None:
        raise UsageError(f"give --port: meter {address} is not in {config.source}")
    bus = config.bus(meter.bus)
    ctx = click.get_current_context()
    settings = {"port": bus.port, "baud": bus.baud, "parity": bus.parity,
                "timeout": bus.response_timeout, "retries": bus.retries,
                "protocol": bus.protocol, "unit": meter.unit, "model": meter.model}
    for key in settings:
        if key in given and ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE:
            settings[key] = given[key]
    return settings


LINE_KEYS = ("port", "baud", "parity", "timeout", "retries", "protocol", "unit", "model")


def line_for(address: str | None, port: str | None, *settings: Any) -> tuple[Any, ...]:
    """The line to use, in `LINE_KEYS` order: the options as given with --port; without it,
    the configured bus of the meter (options given on the command line still win)."""
    if port is not None:
        return (port, *settings)
    line = configured_line(address, dict(zip(LINE_KEYS[1:], settings, strict=True)))
    return tuple(line[key] for key in LINE_KEYS)


def protocol_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--protocol, and --unit/--model for Modbus meters."""
    options = [
        click.option("--protocol", default="dlt645-2007", show_default=True,
                     type=click.Choice(["dlt645-2007", "dlt645-1997", "modbus"])),
        click.option("--unit", type=click.IntRange(1, 247), default=None,
                     help="Modbus unit id."),
        click.option("--model", default=None,
                     help="Modbus register map (eastron-sdm120, chint-ddsu666, ...)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def direct_driver(protocol: str, port: str, baud: int, parity: str, timeout: float,
                  retries: int, unit: int | None, model: str | None) -> Any:
    """The daemon's own driver for a port opened directly by the CLI."""
    from edge_agent.field.drivers import open_driver

    if baud <= 0:
        raise UsageError(f"--baud {baud} must be positive")
    if protocol == "modbus" and model is None:
        raise UsageError("a Modbus meter needs --model (its register map)")
    settings = LineSettings(port=port, baud=baud, parity=parity, response_timeout=timeout,
                            retries=retries)
    return open_driver(protocol, settings, lambda _meter: (unit or 1, model or ""))


def client_for(port: str, baud: int, parity: str, timeout: float, retries: int) -> Dlt645Client:
    if baud <= 0:
        raise UsageError(f"--baud {baud} must be positive")
    settings = LineSettings(port=port, baud=baud, parity=parity, response_timeout=timeout,
                            retries=retries)
    return Dlt645Client(Bus(settings))


@main.command()
@line_options
@protocol_options
@click.option("--address", "-a", default=None, help="Meter address, nameplate order.")
@click.argument("quantities", nargs=-1)
@json_option
def read(port: str, baud: int, parity: str, timeout: float, retries: int, protocol: str,
         unit: int | None, model: str | None, address: str | None,
         quantities: tuple[str, ...], as_json: bool) -> None:
    """Read named quantities or data identifiers from one meter (default: energy).

    \b
    Examples:
      edge-agent read -p /dev/ttyUSB0 -a 000000000001 energy voltage current
      edge-agent read -p /dev/ttyUSB0 -a 000000000001 00010000 --json
    """
    port, baud, parity, timeout, retries, protocol, unit, model = line_for(
        address, port, baud, parity, timeout, retries, protocol, unit, model)
    keys = list(quantities) or ["energy"]
    if protocol != "modbus":
        from protocols.dlt645 import v1997

        find = v1997.lookup_1997 if protocol == "dlt645-1997" else catalogue.lookup
        for key in keys:
            if protocol != "dlt645-1997" and raw_di(key) is not None:
                continue  # a DI outside the catalogue is read all the same, shown raw
            try:
                find(key)
            except KeyError as exc:
                names = ", ".join(sorted(v1997.BY_NAME_1997 if protocol == "dlt645-1997"
                                         else catalogue.BY_NAME))
                raise UsageError(f"{exc.args[0]}; names: {names}") from None
    if address is None and unit is None:
        raise UsageError("give --address (or --unit for a Modbus meter)")
    meter = address or f"unit:{unit}"
    rows = via_daemon({"op": "read", "port": port, "address": meter, "quantities": keys})
    if rows is None:
        driver = direct_driver(protocol, port, baud, parity, timeout, retries, unit, model)
        from edge_agent.runtime.operations import wire_values

        try:  # the values as the daemon gives them (status words in hex, ...)
            rows = wire_values(driver.read(meter, keys))
        finally:
            driver.close()

    def human() -> None:
        for row in rows:
            click.echo(f"{row['name']:<28} {row['di']}  {row['value']} {row['unit']}".rstrip())

    emit(rows, as_json, human)


@main.command()
@line_options
@protocol_options
@click.option("--units", default="1-247", show_default=True,
              help="Modbus unit ids to probe, FIRST-LAST.")
@json_option
def scan(port: str, baud: int, parity: str, timeout: float, retries: int, protocol: str,
         unit: int | None, model: str | None, units: str, as_json: bool) -> None:
    """Discover the meters on a bus: DL/T 645 by wildcard address search, Modbus by probing
    unit ids with a read of the map's energy register.

    Shows progress on stderr; a probe that nobody answers costs TIMEOUT seconds.
    """
    if port is None:
        raise UsageError("give --port: the bus to scan")
    if protocol == "modbus":
        try:
            first, _, last = units.partition("-")
            unit_range = range(int(first), int(last or first) + 1)
            if not unit_range or unit_range[0] < 1 or unit_range[-1] > 247:
                raise ValueError
        except ValueError:
            raise UsageError(f"--units {units!r}: use FIRST-LAST within 1-247, e.g. 1-32") \
                from None
        from edge_agent.field.modbus import ModbusMeterClient
        from protocols.modbus import load_map

        if model is None:
            raise UsageError("a Modbus scan needs --model (which register to probe)")
        mapping = load_map(model)
        client = ModbusMeterClient(LineSettings(port=port, baud=baud, parity=parity,
                                                response_timeout=timeout, retries=0))

        def tick(probe: int, found: int) -> None:
            if probe % 20 == 0:
                progress(f"scan: unit {probe}, {found} meter(s) found")

        try:
            found_units = client.scan(mapping, unit_range, tick)
        finally:
            client.close()
        names = [f"unit:{u}" for u in found_units]
        emit({"port": port, "protocol": protocol, "meters": names, "probes": len(unit_range)},
             as_json, lambda: click.echo("\n".join(names) if names else "no meters found"))
        return
    client = client_for(port, baud, parity, timeout, retries)
    client.version = protocol.rsplit("-", 1)[1]
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
@protocol_options
@click.option("--address", "-a", default=None, help="Meter address, nameplate order.")
@click.argument("action", type=click.Choice(RELAY_CHOICES))
@click.option("--valid-minutes", default=10, show_default=True, type=click.IntRange(1, 1440))
@json_option
def relay(port: str, baud: int, parity: str, timeout: float, retries: int, protocol: str,
          unit: int | None, model: str | None, address: str | None, action: str,
          valid_minutes: int, as_json: bool) -> None:
    """Trip, close, alarm or keep-power a relay and confirm it from the status word."""
    from datetime import timedelta

    from edge_agent.errors import EXPECTED_ERRORS

    if address is None and unit is None:
        raise UsageError("give --address (or --unit for a Modbus meter)")
    port, baud, parity, timeout, retries, protocol, unit, model = line_for(
        address, port, baud, parity, timeout, retries, protocol, unit, model)
    address = address or f"unit:{unit}"
    answer = via_daemon({"op": "relay", "port": port, "address": address, "action": action})
    if protocol != "dlt645-2007" and answer is None:
        driver = direct_driver(protocol, port, baud, parity, timeout, retries, unit, model)
        try:
            state = driver.relay(address, action)
        except EXPECTED_ERRORS as exc:
            record_direct(address, action, None, str(exc))
            raise
        finally:
            driver.close()
        record_direct(address, action, state)
        answer = {"relay": state, "direct": True}
    if answer is not None and answer.get("direct"):
        result = {"meter": address, "action": action, "confirmed": True,
                  "relay": answer["relay"], "via": "direct"}
    elif answer is not None:
        result = {"meter": address, "action": action, "confirmed": True,
                  "relay": answer["relay"], "via": "daemon"}
    else:
        with client_for(port, baud, parity, timeout, retries).bus as bus:
            try:
                word = Dlt645Client(bus).relay(address, action,
                                               valid_for=timedelta(minutes=valid_minutes))
            except EXPECTED_ERRORS as exc:
                record_direct(address, action, None, str(exc))
                raise
        record_direct(address, action, relay_state(word))
        result = {"meter": address, "action": action, "confirmed": True,
                  "status_word_3": f"{word:04X}", "relay": relay_state(word), "via": "direct"}
    emit(result, as_json, lambda: click.echo(
        f"{action} confirmed on {address}: relay {result['relay']} ({result['via']})"))
