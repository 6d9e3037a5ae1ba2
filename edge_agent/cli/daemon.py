"""`run`, `config check` and `commission`: operating the daemon itself."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal

import click

from edge_agent.errors import UsageError
from edge_agent.prepaid.money import parse_decimal

from .root import emit, json_option, main
from .state import current_config, db_option, open_store

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: journald reads the level from the prefix."""

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
def run() -> None:
    """Run the daemon (systemd ExecStart): poll, store, bill, enforce, sync."""
    from edge_agent.runtime.assembly import build_agent

    config = current_config()
    setup_logging(config.log_level)
    agent = build_agent(config)
    agent.run()


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
    tariffs = None
    if config is not None:
        from edge_agent.runtime.daemon import load_tariffs

        tariffs = set(load_tariffs(config, store))
    write, _ = plan_commission(store, config, tariffs, request,
                               f"technician:{getpass.getuser()}", datetime.now(UTC))
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
@db_option
@json_option
def commission_add(address: str, bus: str, account: str, tariff_id: str, initial_kwh: str,
                   multiplier: int, keep_power: bool, allowance: bool, protocol: str | None,
                   unit: int | None, model: str | None, db_path: str | None,
                   as_json: bool) -> None:
    """Register a meter with its initial reading (nothing before it is billed)."""
    result = _commission({"action": "add", "address": address, "bus": bus, "account": account,
                          "tariff": tariff_id, "initial_kwh": str(_kwh(initial_kwh,
                                                                       "--initial-kwh")),
                          "multiplier": multiplier, "keep_power": keep_power,
                          "allowance": allowance, "protocol": protocol, "unit": unit,
                          "model": model}, db_path)
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
