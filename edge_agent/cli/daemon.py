"""`run`, `config check` and `commission`: operating the daemon itself."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal

import click

from edge_agent.errors import Conflict, UnknownMeter, UsageError
from edge_agent.prepaid.money import parse_decimal
from edge_agent.store import MeterRecord

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
@json_option
def config_check(as_json: bool) -> None:
    """Validate the configuration; every mistake is reported with its key and line."""
    from edge_agent.errors import ConfigError

    from .root import wants_json

    try:
        config = current_config()
    except ConfigError as exc:
        problems = [p for p in str(exc).splitlines() if p.strip()]
        if wants_json(as_json):
            emit({"ok": False, "problems": problems}, as_json)
        else:
            for problem in problems:
                click.echo(problem)
        raise ConfigError(f"{len(problems)} problem(s) in the configuration") from None
    from edge_agent.runtime.daemon import load_tariffs

    tariffs = load_tariffs(config)
    missing = sorted({m.tariff for m in config.meters} - set(tariffs))
    if missing:
        from edge_agent.errors import ConfigError

        raise ConfigError(f"{config.source}: meters use tariffs not found in "
                          f"{config.tariff_dir}: {', '.join(missing)}")
    summary = {"file": config.source, "ok": True, "gateway_id": config.gateway_id,
               "buses": len(config.buses), "meters": len(config.meters),
               "tariffs": sorted(tariffs)}
    emit(summary, as_json, lambda: click.echo(
        f"{config.source}: ok ({len(config.buses)} bus(es), {len(config.meters)} meter(s), "
        f"tariffs {', '.join(sorted(tariffs)) or 'none'})"))


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


@commission.command("add")
@click.argument("address")
@click.option("--bus", required=True)
@click.option("--account", required=True)
@click.option("--tariff", "tariff_id", required=True)
@click.option("--initial-kwh", required=True, help="Register reading at commissioning.")
@click.option("--multiplier", default=1, type=click.IntRange(1))
@click.option("--keep-power", is_flag=True)
@click.option("--allowance", is_flag=True)
@click.option("--protocol", default="dlt645-2007")
@db_option
@json_option
def commission_add(address: str, bus: str, account: str, tariff_id: str, initial_kwh: str,
                   multiplier: int, keep_power: bool, allowance: bool, protocol: str,
                   db_path: str | None, as_json: bool) -> None:
    """Register a meter with its initial reading (nothing before it is billed)."""
    store = open_store(db_path)
    if store.meter(address) is not None:
        raise Conflict(f"meter {address} is already registered; use commission replace")
    store.add_meter(MeterRecord(address, bus, account, tariff_id, protocol, multiplier,
                                keep_power, allowance),
                    _kwh(initial_kwh, "--initial-kwh"), datetime.now(UTC))
    emit({"meter": address, "commissioned": True}, as_json,
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
    store = open_store(db_path)
    record = store.meter(old)
    if record is None:
        raise UnknownMeter(f"unknown meter {old}")
    replacement = MeterRecord(new, record.bus, record.account, record.tariff, record.protocol,
                              record.multiplier, record.keep_power, record.allowance)
    store.replace_meter(old, replacement, _kwh(old_final_kwh, "--old-final-kwh"),
                        _kwh(new_initial_kwh, "--new-initial-kwh"), datetime.now(UTC))
    emit({"old": old, "new": new, "replaced": True}, as_json,
         lambda: click.echo(f"meter {old} replaced by {new}"))


@commission.command("remove")
@click.argument("address")
@db_option
@json_option
def commission_remove(address: str, db_path: str | None, as_json: bool) -> None:
    """Stop polling and billing a meter; its history stays."""
    open_store(db_path).remove_meter(address)
    emit({"meter": address, "removed": True}, as_json,
         lambda: click.echo(f"meter {address} removed"))
