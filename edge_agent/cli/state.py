"""Verbs that read the daemon's database (safe while it runs: SQLite WAL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edge_agent.config import FIELD_DATA, Config, load_config
from edge_agent.errors import ConfigError
from edge_agent.store import Store

from .output import ago, clip, local_time, table, two_places, wide_option
from .root import emit, json_option, main, wants_json


def current_config(full: bool = True) -> Config:
    """The configuration (read once per command); `full=False` for verbs that only read the
    database: bus quantity names are not checked (that loads the frame codec)."""
    root = click.get_current_context().find_root()
    cached = root.obj.get("config") or (None if full else root.obj.get("config_light"))
    if cached is None:
        cached = load_config(root.obj["config_path"], quantities=full)
        root.obj["config" if full else "config_light"] = cached
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
        db_path = current_config(full=write).database
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


def _zone() -> Any:
    """The gateway's time zone for display (the system's when there is no configuration)."""
    try:
        return current_config(full=False).tz
    except ConfigError:
        return None


#: a heartbeat older than this means the daemon is not running (it writes one every 10 s)
HEARTBEAT_STALE = 30.0


def daemon_state(store: Store) -> dict[str, Any]:
    """Whether the daemon runs, judged by its heartbeat's age (a killed daemon says nothing:
    its last broker state and bus health are stale, and `status` must say so)."""
    from datetime import UTC, datetime

    beat = store.setting("heartbeat")
    if beat is None:
        return {"running": False, "heartbeat": None, "age_seconds": None,
                "since": None}
    age = (datetime.now(UTC) - datetime.fromisoformat(beat)).total_seconds()
    running = age <= HEARTBEAT_STALE
    stopped = store.setting("stopped_at")
    if running and stopped is not None and stopped >= beat:
        running = False
    return {"running": running, "heartbeat": beat, "age_seconds": round(age, 1),
            "since": None if running else (stopped if stopped and stopped >= beat else beat)}


# -- field data and problems (status, meters, meters --geojson, map) -------------------------

def meter_locations(store: Store) -> dict[str, dict[str, Any]]:
    """Each meter's field data: what the database keeps (the head end's `add_meter`, the file
    as the daemon last read it), with the configuration's values on top (the file may have
    changed since); meters with none are left out."""
    kept = store.meter_locations()
    try:
        config = current_config(full=False)
    except ConfigError:  # `--db` without a configuration
        return kept
    for meter in (*config.meters, *config.total_meters):
        given = {k: getattr(meter, k) for k in FIELD_DATA if getattr(meter, k) is not None}
        if given:
            before = kept.get(meter.address, dict.fromkeys(FIELD_DATA))
            kept[meter.address] = {**before, **given, "source": "file"}
    return kept


def with_field_data(store: Store, rows: list[dict[str, Any]]
                    ) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Give each `meter_status` row its `problems` (store.meter_problems: the one rule),
    `problem` and `location` (None when it has no field data); (problems, locations)."""
    problems, locations = store.meter_problems(), meter_locations(store)
    for row in rows:
        row["problems"] = problems.get(row["meter"], [])
        row["problem"] = bool(row["problems"])
        row["location"] = locations.get(row["meter"])
    return problems, locations


def _place(location: dict[str, Any] | None, wide: bool) -> dict[str, str]:
    """Pole, phase and `lat,lon` for a table (5 decimals, about a metre, unless wide)."""
    where = location or {}
    lat, lon = where.get("lat"), where.get("lon")
    if lat is None or lon is None:
        point = ""
    else:
        point = f"{lat},{lon}" if wide else f"{round(lat, 5)},{round(lon, 5)}"
    pole = where.get("pole") or ""
    return {"pole": pole if wide else clip(pole, 10), "line_phase": where.get("phase") or "",
            "lat_lon": point, "class": where.get("customer_class") or ""}


def geojson(store: Store) -> dict[str, Any]:
    """Meters with coordinates (configured or given by the head end) as a GeoJSON
    FeatureCollection, with `problem` / `problems` by the rule `status` uses."""
    status = {r["meter"]: r for r in store.meter_status()}
    problems, locations = store.meter_problems(), meter_locations(store)
    try:
        config: Config | None = current_config(full=False)
    except ConfigError:
        config = None
    configured = {m.address: m for m in (*config.meters, *config.total_meters)} if config else {}
    areas = {m.address: m.behind for m in store.meters()}  # as line loss counts them
    features = []
    for address, where in sorted(locations.items()):
        if where.get("lat") is None or where.get("lon") is None:
            continue
        meter, row = configured.get(address), status.get(address, {})
        if meter is None and not row:
            continue  # a meter removed since (its history is kept, it is not on the map)
        props = {"meter": address, "role": meter.role if meter else "customer",
                 "account": (meter.account if meter else row.get("account")) or None,
                 "pole": where.get("pole"), "phase": where.get("phase"),
                 "customer_class": where.get("customer_class"),
                 "behind": areas[address] if address in areas
                 else meter.behind if meter else None, "source": where.get("source"),
                 "online": row.get("online"), "relay": row.get("relay"),
                 "balance": row.get("balance"), "problems": problems.get(address, []),
                 "problem": bool(problems.get(address))}
        features.append({"type": "Feature", "properties": props,
                         "geometry": {"type": "Point",
                                      "coordinates": [where["lon"], where["lat"]]}})
    return {"type": "FeatureCollection", "features": features}


@main.command()
@click.option("--geojson", "as_geojson", is_flag=True,
              help="Meters with a location as GeoJSON for a map app (problem meters flagged).")
@db_option
@wide_option
@json_option
def meters(as_geojson: bool, db_path: str | None, wide: bool, as_json: bool) -> None:
    """List registered meters with their last reading, relay state and balance."""
    store = open_store(db_path)
    if as_geojson:
        emit(geojson(store), True)
        return
    rows = store.meter_status()
    owned = store.meter_settings()  # who set what: the file unless the head end/technician did
    for row in rows:
        settings = owned.get(row["meter"], {})
        row["settings"] = {name: {"value": s["value"], "source": s["source"], "at": s["at"]}
                           for name, s in settings.items()}
        row["set_by"] = ", ".join(f"{n}:{s['source']}" for n, s in sorted(settings.items())
                                  ) or "file"
    with_field_data(store, rows)
    if wide or wants_json(as_json):
        shown = [{**r, **_place(r["location"], True), "problems": ",".join(r["problems"])}
                 for r in rows]
        emit(rows, as_json, lambda: table(shown, [
            "meter", "bus", "protocol", "account", "tariff", "kwh", "relay", "phase", "balance",
            "online", "set_by", "problems", "pole", "line_phase", "lat_lon", "class"],
            headers={"line_phase": "line_ph", "lat_lon": "lat,lon"}, width=None))
        return
    short = [{**r, "kwh": two_places(r["kwh"]), "balance": two_places(r["balance"]),
              "online": "yes" if r["online"] else "NO"} for r in rows]
    table(short, ["meter", "bus", "account", "kwh", "relay", "online", "balance"],
          squeeze="account")


@main.command()
@db_option
@wide_option
@json_option
def status(db_path: str | None, wide: bool, as_json: bool) -> None:
    """Health per bus and per meter: success rate, last reading, relay, balance, backlog."""
    import json

    store = open_store(db_path)
    rows = store.meter_status()
    daemon = daemon_state(store)
    live = {b["bus"]: b for b in json.loads(store.setting("bus_health") or "[]")}
    buses = []
    for bus in store.bus_health(rows):
        # the live part of runtime.health's summary (not imported: start-up time); the
        # stored day's requests/replies/success_rate stay as they are
        state = {k: v for k, v in live.get(bus["bus"], {}).items()
                 if k not in ("bus", "requests", "replies")}
        buses.append({**bus, **state,
                      "state": state.get("state", "unknown") if daemon["running"]
                      else "stalled"})
    depth = store.outbox_depth()
    data = {"gateway": store.setting("gateway_id"), "daemon": daemon,
            "broker": store.setting("broker_state", "unknown") if daemon["running"]
            else "unknown (daemon not running)",
            "daemon_heartbeat": daemon["heartbeat"], "outbox": depth,
            "outbox_total": sum(depth.values()), "buses": buses}
    problems, locations = with_field_data(store, rows)
    rows.sort(key=lambda r: not r["problem"])  # problem meters first, each in bus order
    # every meter with a problem, billed or not (a total meter's clock or line loss)
    data["problems"] = [{"meter": m, "problems": kinds, "location": locations.get(m)}
                        for m, kinds in problems.items()]
    data["meters"] = rows
    if wants_json(as_json):
        emit(data, as_json)
        return
    tz = _zone()
    if daemon["running"]:
        head = f"daemon running (heartbeat {ago(daemon['age_seconds'])} ago)"
    elif daemon["since"] is None:
        head = "daemon NOT RUNNING (it has never run on this database)"
    else:
        head = (f"daemon NOT RUNNING since {local_time(daemon['since'], tz)} "
                f"({daemon['since'][:19]}Z)" if wide else
                f"daemon NOT RUNNING since {local_time(daemon['since'], tz)} "
                f"({daemon['since'][:16]} UTC)")
    click.echo(head)
    click.echo(clip(f"gateway {data['gateway']}  broker {data['broker']}  "
                    f"outbox {data['outbox_total']}", 10**6 if wide else 80))
    bus_rows = [{**b, "success": _rate(b.get("success_rate")),
                 "last_poll": local_time(b.get("last_success"), tz),
                 "error": b.get("last_error") or ""} for b in buses]
    table(bus_rows, ["bus", "state", "meters", "online", "success", "last_poll", "error"],
          squeeze="error", width=None if wide else 80)
    click.echo()
    if data["problems"]:
        click.echo(f"{len(data['problems'])} meter(s) with a problem:")
        table([{**p, **_place(p["location"], wide), "problems": ",".join(p["problems"])}
               for p in data["problems"]],
              ["meter", "pole", "line_phase", "lat_lon", "problems"]
              + (["class"] if wide else []),
              headers={"line_phase": "ph", "lat_lon": "lat,lon"}, squeeze="problems",
              width=None if wide else 80)
        click.echo()
    meter_rows = [{**r, "success": _rate(r["success_rate"]),
                   "last_reading": local_time(r["last_reading"], tz) if not wide
                   else r["last_reading"],
                   "balance": r["balance"] if wide else two_places(r["balance"]),
                   "flag": "!" if r["problem"] else "",
                   **_place(r["location"], True), "problems": ",".join(r["problems"])}
                  for r in rows]
    table(meter_rows, ["flag", "meter", "bus", "success", "last_reading", "relay", "balance"]
          + (["problems", "pole", "line_phase", "lat_lon", "class"] if wide else []),
          headers={"flag": "!", "line_phase": "ph", "lat_lon": "lat,lon"},
          squeeze="bus", width=None if wide else 80)


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f}%"


@main.command()
@click.argument("account", required=False)
@db_option
@wide_option
@json_option
def balance(account: str | None, db_path: str | None, wide: bool, as_json: bool) -> None:
    """Balance of one account (or all), exact, from the ledger."""
    from edge_agent.prepaid.money import display_money, format_money

    store = open_store(db_path)
    balances = store.balances()
    if account is not None:
        balances = {account: store.balance(account)}
    rows = [{"account": a, "balance": format_money(b), "display": display_money(b)}
            for a, b in balances.items()]
    emit(rows if account is None else rows[0], as_json,
         lambda: table(rows, ["account", "display", "balance"] if wide
                       else ["account", "display"], headers={"display": "balance"},
                       squeeze="account", width=None if wide else 80))


@main.command()
@click.argument("account", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@db_option
@wide_option
@json_option
def ledger(account: str | None, limit: int, db_path: str | None, wide: bool,
           as_json: bool) -> None:
    """Ledger entries (newest last), with the balance after each."""
    rows = open_store(db_path).ledger(account, limit)
    if wide or wants_json(as_json):
        emit(rows, as_json, lambda: table(rows, ["seq", "ts", "account", "kind", "amount",
                                                 "balance_after", "id"], width=None))
        return
    tz = _zone()
    short = [{**r, "ts": local_time(r["ts"], tz), "amount": two_places(r["amount"]),
              "balance_after": two_places(r["balance_after"])} for r in rows]
    table(short, ["seq", "ts", "account", "kind", "amount", "balance_after"],
          headers={"balance_after": "balance"}, squeeze="account")


@main.command()
@click.option("--meter", default=None)
@click.option("--type", "types", multiple=True, help="Only these event types (repeat).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@db_option
@wide_option
@json_option
def events(meter: str | None, types: tuple[str, ...], limit: int, db_path: str | None,
           wide: bool, as_json: bool) -> None:
    """Events (alerts, relay actions, tamper, ...), newest last."""
    rows = open_store(db_path).events(limit, meter, types)
    for row in rows:
        row["detail_text"] = ", ".join(f"{k}={v}" for k, v in row["detail"].items())
    if wide or wants_json(as_json):
        emit(rows, as_json, lambda: table(rows, ["seq", "ts", "meter", "account", "type",
                                                 "severity", "detail_text"], width=None))
        return
    tz = _zone()
    short = [{**r, "ts": local_time(r["ts"], tz), "who": r["meter"] or r["account"] or "",
              "severity": r["severity"][:4]} for r in rows]
    table(short, ["seq", "ts", "who", "type", "severity", "detail_text"],
          headers={"severity": "sev", "detail_text": "detail"}, squeeze="detail_text")


@main.command()
@db_option
@json_option
def outbox(db_path: str | None, as_json: bool) -> None:
    """Messages waiting for the head end (store and forward), by kind."""
    from datetime import UTC, datetime

    store = open_store(db_path)
    depth = store.outbox_depth()
    oldest = store.pending(limit=1)
    created = store.outbox_oldest()
    age = None if created is None else (datetime.now(UTC) - created).total_seconds()
    data = {"total": sum(depth.values()), "by_kind": depth,
            "oldest_seq": oldest[0][0] if oldest else None,
            "oldest_age_seconds": None if age is None else round(age, 1)}
    emit(data, as_json, lambda: click.echo(
        f"{data['total']} message(s) waiting: "
        + (", ".join(f"{k} {v}" for k, v in depth.items()) or "none")
        + (f"; oldest {ago(age)} old" if age is not None else "")))
