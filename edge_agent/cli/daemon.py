"""`run`, `config check` and `commission`: operating the daemon itself."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click

from edge_agent.errors import UsageError
from edge_agent.prepaid.money import parse_decimal

from .root import emit, json_option, main
from .state import current_config, db_option, open_store

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, 25: 5, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: journald reads the level from the prefix.

    One record is one journal line: a traceback is folded into it (` | ` between lines), so a
    crash is one entry at priority err, not thirty lines at info."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{PRIORITY.get(record.levelno, 6)}>{record.name}: {text}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JournalFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    import threading

    def thread_crashed(args: threading.ExceptHookArgs) -> None:
        """A thread that dies of an exception: one err record, not a traceback at info."""
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        logging.getLogger("edge_agent").error(
            "thread %s crashed", name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]

    threading.excepthook = thread_crashed


@main.command()
@click.option("--once", is_flag=True,
              help="Poll each bus once, print what was read and what would be decided (no "
                   "relay action, nothing stored), then exit: to validate a configuration.")
@json_option
def run(once: bool, as_json: bool) -> None:
    """Run the daemon (systemd ExecStart): poll, store, bill, enforce, sync.

    Exits 2 on a configuration error (the unit does not restart on it), 1 on a failure."""
    from edge_agent.errors import EXPECTED_ERRORS, ConfigError

    log = logging.getLogger("edge_agent")
    config = current_config()
    if once:
        from .dryrun import run_once

        run_once(config, as_json)
        return
    setup_logging(config.log_level)
    try:
        from edge_agent.runtime.assembly import build_agent

        agent = build_agent(config)
        agent.run()
    except ConfigError as exc:
        log.error("configuration error, not starting: %s", exc)
        raise
    except EXPECTED_ERRORS as exc:
        log.error("stopped: %s", exc)
        raise
    except Exception:
        # Anything unexpected: one journal record at priority err with the traceback.
        log.error("edge-agent crashed", exc_info=True)
        raise SystemExit(1) from None


@main.group("config")
def config_group() -> None:
    """Configuration files."""


@config_group.command("check")
@click.option("--file-only", is_flag=True,
              help="Check the file and its tariffs only, not this machine (ports, groups, "
                   "TLS files, the metrics port): for a configuration made for another "
                   "gateway.")
@json_option
def config_check(file_only: bool, as_json: bool) -> None:
    """Validate the configuration; every mistake is reported with its key and line.

    Beyond the file itself: serial ports exist and may be opened, TLS files are readable,
    the control group exists, every meter's tariff is there, the metrics port can be bound;
    meters whose relay the agent cannot switch are warnings (exit 0)."""
    from edge_agent.errors import ConfigError

    from .root import wants_json

    try:
        config = current_config()
    except ConfigError as exc:
        problems = [p for p in str(exc).splitlines() if p.strip()]
        _report(problems, [], as_json)
        raise ConfigError(f"{len(problems)} problem(s) in the configuration") from None
    problems, warnings, tariffs = _environment_problems(config, machine=not file_only)
    if problems:
        _report(problems, warnings, as_json)
        raise ConfigError(f"{len(problems)} problem(s) in the configuration") from None
    summary = {"file": config.source, "ok": True, "gateway_id": config.gateway_id,
               "buses": len(config.buses), "meters": len(config.meters),
               "tariffs": sorted(tariffs), "warnings": warnings}
    if wants_json(as_json):
        emit(summary, as_json)
        return
    for warning in warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"{config.source}: ok ({len(config.buses)} bus(es), {len(config.meters)} "
               f"meter(s), tariffs {', '.join(sorted(tariffs)) or 'none'})")


def _report(problems: list[str], warnings: list[str], as_json: bool) -> None:
    from .root import wants_json

    if wants_json(as_json):
        emit({"ok": False, "problems": problems, "warnings": warnings}, as_json)
        return
    for problem in problems:
        click.echo(problem)
    for warning in warnings:
        click.echo(f"warning: {warning}")


def _environment_problems(config: Any, machine: bool = True
                          ) -> tuple[list[str], list[str], dict[str, Any]]:
    """What the file cannot say about the machine: (problems, warnings, tariffs)."""
    from edge_agent.errors import ConfigError
    from edge_agent.runtime.daemon import load_tariffs
    from edge_agent.runtime.health import port_problem

    problems: list[str] = []
    warnings: list[str] = []
    where = config.source
    tariffs: dict[str, Any] = {}
    try:
        tariffs = load_tariffs(config)
    except ConfigError as exc:
        problems += [f"{where}: [agent].tariff_dir: {p}" for p in str(exc).split("; ")]
    if not problems:
        for meter in config.meters:
            if meter.tariff not in tariffs:
                problems.append(f"{where}: meter {meter.address}: tariff {meter.tariff!r} is "
                                f"not in {config.tariff_dir} (known: "
                                f"{', '.join(sorted(tariffs)) or 'none'})")
    warnings += _relay_warnings(config)
    if not machine:
        return problems, warnings, tariffs
    for bus in config.buses:
        problem = port_problem(bus.port)
        if problem is not None:
            problems.append(f"{where}: bus {bus.name}: {problem}")
    problems += _file_problems(config)
    problems += _group_problems(config)
    port_note, in_use = _metrics_port_problem(config.metrics_port)
    if port_note is not None:
        (warnings if in_use else problems).append(f"{where}: {port_note}")
    return problems, warnings, tariffs


def _file_problems(config: Any) -> list[str]:
    import os

    out = []
    if config.mqtt.enabled:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(config.mqtt, key)
            if path and not os.access(path, os.R_OK):
                reason = "does not exist" if not os.path.exists(path) else "is not readable"
                out.append(f"{config.source}: [mqtt].{key}: {path} {reason}")
    return out


def _group_problems(config: Any) -> list[str]:
    if not config.control_group:
        return []
    import grp

    try:
        grp.getgrnam(config.control_group)
    except KeyError:
        return [f"{config.source}: [agent].control_group: no group named "
                f"{config.control_group!r} on this machine"]
    return []


def _metrics_port_problem(port: int | None) -> tuple[str | None, bool]:
    """(what is wrong, whether it is only in use: the running daemon may hold it)."""
    if port is None:
        return None, False
    import errno
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"[agent].metrics_port {port} is in use (by the running daemon, or "
                        "by something else?)"), True
            return f"[agent].metrics_port {port}: cannot listen ({exc.strerror})", False
    return None, False


def _relay_warnings(config: Any) -> list[str]:
    """Prepaid meters the agent cannot cut off or restore: DL/T 645-1997 meters, Modbus
    meters whose register map has no relay."""
    from edge_agent.errors import RegisterMapError

    out = []
    buses = {b.name: b for b in config.buses}
    maps: dict[str, Any] = {}
    for meter in config.meters:
        protocol = buses[meter.bus].protocol if meter.bus in buses else ""
        if protocol == "dlt645-1997":
            out.append(f"meter {meter.address}: DL/T 645-1997 has no remote relay: the agent "
                       "bills it but cannot cut it off")
        elif protocol == "modbus" and meter.model:
            from protocols.modbus import load_map

            try:
                mapping = maps.setdefault(meter.model, load_map(meter.model))
            except RegisterMapError:
                continue  # reported as an error at start
            if mapping.relay is None:
                out.append(f"meter {meter.address}: register map {meter.model} has no relay: "
                           "the agent bills it but cannot cut it off")
    return out


@main.group()
def commission() -> None:
    """Add, replace or remove a meter in the daemon's database."""


def _kwh(text: str, what: str) -> Decimal:
    try:
        value = parse_decimal(text, what, places=2)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if value < 0:
        raise UsageError(f"{what} must not be negative")
    return value


def _commission(request: dict[str, object], db_path: str | None) -> dict[str, object]:
    """Through the running daemon (its control socket) when it runs: it owns the database
    and reloads at once; directly on the database when it does not.  Checked the same way
    either way (runtime/operations.py `commission`)."""
    import getpass

    from edge_agent.errors import ConfigError, from_kind
    from edge_agent.runtime.operations import commission as plan_commission

    try:
        config = current_config()
    except ConfigError:
        if db_path is None:
            raise
        config = None
    if db_path is None and config is not None:
        from edge_agent.runtime.control import call

        answer = call(config.control_socket, {"op": "commission", **request}, timeout=60)
        if answer is not None:
            if not answer.get("ok"):
                raise from_kind(str(answer.get("kind")), str(answer.get("error")))
            return {**answer["result"], "via": "daemon"}
    store = open_store(db_path)
    tariffs, processor = None, None
    if config is not None:
        from edge_agent.prepaid.processor import Processor
        from edge_agent.runtime.daemon import load_tariffs

        loaded = load_tariffs(config, store)
        tariffs = set(loaded)
        # a replaced meter is billed up to its final reading, as the daemon would
        processor = Processor(store, loaded, config.policy, config.tz, config.gateway_id)
        processor.register_max = {m.address: m.register_max for m in config.meters}
    write, _ = plan_commission(store, config, tariffs, request,
                               f"technician:{getpass.getuser()}", datetime.now(UTC), processor)
    with store.transaction():
        return {**write(), "via": "database"}


@commission.command("add")
@click.argument("address")
@click.option("--bus", required=True)
@click.option("--account", required=True)
@click.option("--tariff", "tariff_id", required=True)
@click.option("--initial-kwh", required=True, help="Register reading at commissioning.")
@click.option("--multiplier", default=1, type=click.IntRange(1))
@click.option("--keep-power", is_flag=True)
@click.option("--allowance", is_flag=True)
@click.option("--protocol", default=None, help="Default: the bus's.")
@click.option("--unit", type=click.IntRange(1, 247), default=None, help="Modbus unit id.")
@click.option("--model", default=None, help="Modbus register map.")
@click.option("--behind", default=None,
              help="The area's total meter it sits behind (line loss; a configured one).")
@db_option
@json_option
def commission_add(address: str, bus: str, account: str, tariff_id: str, initial_kwh: str,
                   multiplier: int, keep_power: bool, allowance: bool, protocol: str | None,
                   unit: int | None, model: str | None, behind: str | None,
                   db_path: str | None, as_json: bool) -> None:
    """Register a meter with its initial reading (nothing before it is billed)."""
    result = _commission({"action": "add", "address": address, "bus": bus, "account": account,
                          "tariff": tariff_id, "initial_kwh": str(_kwh(initial_kwh,
                                                                       "--initial-kwh")),
                          "multiplier": multiplier, "keep_power": keep_power,
                          "allowance": allowance, "protocol": protocol, "unit": unit,
                          "model": model, "behind": behind}, db_path)
    emit(result, as_json,
         lambda: click.echo(f"meter {address} commissioned at {initial_kwh} kWh"))


@commission.command("replace")
@click.argument("old")
@click.argument("new")
@click.option("--old-final-kwh", required=True)
@click.option("--new-initial-kwh", required=True)
@db_option
@json_option
def commission_replace(old: str, new: str, old_final_kwh: str, new_initial_kwh: str,
                       db_path: str | None, as_json: bool) -> None:
    """Swap a meter: no charge across the swap; the account and tariff carry over."""
    result = _commission({"action": "replace", "old": old, "new": new,
                          "old_final_kwh": str(_kwh(old_final_kwh, "--old-final-kwh")),
                          "new_initial_kwh": str(_kwh(new_initial_kwh, "--new-initial-kwh"))},
                         db_path)
    emit(result, as_json, lambda: click.echo(f"meter {old} replaced by {new}"))


@commission.command("remove")
@click.argument("address")
@db_option
@json_option
def commission_remove(address: str, db_path: str | None, as_json: bool) -> None:
    """Stop polling and billing a meter; its history stays."""
    result = _commission({"action": "remove", "address": address}, db_path)
    emit(result, as_json, lambda: click.echo(f"meter {address} removed"))
