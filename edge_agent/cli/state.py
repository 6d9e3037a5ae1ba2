"""Verbs that read the daemon's database (safe while it runs: SQLite WAL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edge_agent.config import Config, load_config
from edge_agent.errors import ConfigError
from edge_agent.store import Store

from .root import emit, json_option, main


def current_config() -> Config:
    root = click.get_current_context().find_root()
    cached = root.obj.get("config")
    if cached is None:
        cached = root.obj["config"] = load_config(root.obj["config_path"])
    return cached


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", "db_path", default=None,
                        help="Database file (default: the one in the configuration).")(func)


def open_store(db_path: str | None, write: bool = False) -> Store:
    """The database for a verb; read-only for a user who may read but not write it (an
    operator in the agent's group), so reading verbs work for them too."""
    import os
    from pathlib import Path

    from edge_agent.errors import StorageError

    if db_path is None:
        db_path = current_config().database
    path = Path(db_path)
    if not path.exists():
        raise ConfigError(f"no database at {db_path}: has the daemon run yet?")
    if not os.access(path, os.R_OK):
        raise StorageError(f"cannot read the database {db_path}: permission denied (run as "
                           "the agent's user or a member of its group)")
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if write and not writable:
        raise StorageError(f"cannot write the database {db_path}: permission denied (run as "
                           "the agent's user, e.g. sudo -u edge-agent)")
    return Store(db_path, readonly=not writable)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


@main.command()
@db_option
@json_option
def meters(db_path: str | None, as_json: bool) -> None:
    """List registered meters with their last reading, relay state and balance."""
    store = open_store(db_path)
    rows = store.meter_status()
    emit(rows, as_json, lambda: _table(rows, ["meter", "bus", "protocol", "account", "kwh",
                                              "relay", "phase", "balance", "online"]))


@main.command()
@db_option
@json_option
def status(db_path: str | None, as_json: bool) -> None:
    """Health per bus and per meter: success rate, last reading, relay, balance, backlog."""
    store = open_store(db_path)
    rows = store.meter_status()
    buses = store.bus_health(rows)
    depth = store.outbox_depth()
    data = {"gateway": store.setting("gateway_id"),
            "broker": store.setting("broker_state", "unknown"),
            "daemon_heartbeat": store.setting("heartbeat"), "outbox": depth,
            "outbox_total": sum(depth.values()), "buses": buses, "meters": rows}

    def human() -> None:
        click.echo(f"gateway {data['gateway']}  broker {data['broker']}  "
                   f"outbox {data['outbox_total']}  heartbeat {data['daemon_heartbeat']}")
        _table(buses, ["bus", "meters", "online", "success_rate", "relays_open"])
        click.echo()
        _table(rows, ["meter", "bus", "success_rate", "last_reading", "relay", "balance"])

    emit(data, as_json, human)


@main.command()
@click.argument("account", required=False)
@db_option
@json_option
def balance(account: str | None, db_path: str | None, as_json: bool) -> None:
    """Balance of one account (or all), exact, from the ledger."""
    from edge_agent.prepaid.money import display_money, format_money

    store = open_store(db_path)
    balances = store.balances()
    if account is not None:
        balances = {account: store.balance(account)}
    rows = [{"account": a, "balance": format_money(b), "display": display_money(b)}
            for a, b in balances.items()]
    emit(rows if account is None else rows[0], as_json,
         lambda: _table(rows, ["account", "display", "balance"]))


@main.command()
@click.argument("account", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@db_option
@json_option
def ledger(account: str | None, limit: int, db_path: str | None, as_json: bool) -> None:
    """Ledger entries (newest last), with the balance after each."""
    rows = open_store(db_path).ledger(account, limit)
    emit(rows, as_json, lambda: _table(rows, ["seq", "ts", "account", "kind", "amount",
                                              "balance_after", "id"]))


@main.command()
@click.option("--meter", default=None)
@click.option("--type", "types", multiple=True, help="Only these event types (repeat).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@db_option
@json_option
def events(meter: str | None, types: tuple[str, ...], limit: int, db_path: str | None,
           as_json: bool) -> None:
    """Events (alerts, relay actions, tamper, ...), newest last."""
    rows = open_store(db_path).events(limit, meter, types)
    for row in rows:
        row["detail_text"] = ", ".join(f"{k}={v}" for k, v in row["detail"].items())
    emit(rows, as_json, lambda: _table(rows, ["seq", "ts", "meter", "account", "type",
                                              "severity", "detail_text"]))


@main.command()
@db_option
@json_option
def outbox(db_path: str | None, as_json: bool) -> None:
    """Messages waiting for the head end (store and forward), by kind."""
    store = open_store(db_path)
    depth = store.outbox_depth()
    oldest = store.pending(limit=1)
    data = {"total": sum(depth.values()), "by_kind": depth,
            "oldest_seq": oldest[0][0] if oldest else None}
    emit(data, as_json, lambda: click.echo(
        f"{data['total']} message(s) waiting: "
        + (", ".join(f"{k} {v}" for k, v in depth.items()) or "none")))
