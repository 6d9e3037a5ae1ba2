"""`tariff check` and `bill replay`: check a tariff before deploying it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from edge_agent.errors import ConfigError, EdgeAgentError, TariffError, UsageError
from edge_agent.prepaid.money import parse_decimal
from edge_agent.prepaid.policy import Policy, parse_policy
from edge_agent.prepaid.replay import Replay, parse_time, read_readings_csv
from edge_agent.prepaid.tariff import (
    Tariff,
    combine_versions,
    load_tariff,
    tariff_from_text,
    version_key,
    version_status,
)

from .root import dumps, emit, json_option, main


@main.group()
def tariff() -> None:
    """Tariff files."""


@tariff.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--at", "at_text", default=None, metavar="TIMESTAMP",
              help="Say which versions are current or pending at this time (default: now).")
@click.option("--timezone", default="Asia/Shanghai", show_default=True,
              help="Zone of effective times written without one.")
@json_option
def tariff_check(files: tuple[str, ...], at_text: str | None, timezone: str,
                 as_json: bool) -> None:
    """Validate tariff files; print each error with its location (exit 1 on any error).

    Versions of one tariff id (`effective_from`) are shown as current, pending or superseded.
    """
    tz = _zone(timezone)
    now = parse_time(at_text, tz, "--at") if at_text else datetime.now(tz)
    results = []
    loaded = []
    for path in files:
        try:
            t = load_tariff(path)
            loaded.append(t)
            results.append({"file": path, "ok": True, "id": t.id, "type": t.kind,
                            "effective_from": version_key(t) or None, "errors": []})
        except TariffError as exc:
            results.append({"file": path, "ok": False, "errors": exc.problems})
    statuses = _statuses(loaded, now, tz, results)
    for r in results:
        if r["ok"]:
            r["status"] = statuses.get((r["id"], r["effective_from"] or ""), "current")

    def human() -> None:
        for r in results:
            if r["ok"]:
                when = f" from {r['effective_from']}" if r["effective_from"] else ""
                click.echo(f"{r['file']}: ok ({r['type']} tariff {r['id']}) "
                           f"{r['status']}{when}")
            for problem in r["errors"]:
                click.echo(problem)

    emit(results, as_json, human)
    failed = [r for r in results if not r["ok"]]
    if failed:
        count = sum(len(r["errors"]) for r in failed)
        # The check ran and found the file invalid: an operation failure (exit 1), as for
        # `frame decode` of an invalid frame.
        raise EdgeAgentError(f"{count} error(s) in {len(failed)} file(s)")


def _statuses(loaded: list[Tariff], now: datetime, tz: ZoneInfo,
              results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """current / pending / superseded per (id, effective_from); two versions of an id with
    the same effective time are an error of the files that hold them."""
    try:
        chains = combine_versions(loaded)
    except TariffError as exc:
        for r in results:
            if r["ok"] and any(f"tariff {r['id']}:" in p for p in exc.problems):
                r["ok"] = False
                r["errors"] = [f"{r['file']}: {p}" for p in exc.problems
                               if f"tariff {r['id']}:" in p]
        return {}
    return {(v.id, version_key(v)): status for chain in chains.values()
            for v, status in version_status(chain, now, tz)}


@main.command("tariffs")
@click.option("--db", "db_path", default=None,
              help="Database file (default: the one in the configuration).")
@click.option("--at", "at_text", default=None, metavar="TIMESTAMP",
              help="Status at this time (default: now).")
@json_option
def tariffs_verb(db_path: str | None, at_text: str | None, as_json: bool) -> None:
    """List tariff versions the daemon uses (its tariff directory and the versions the head
    end pushed into its database), each current, pending or superseded."""
    from edge_agent.cli.state import current_config, open_store

    config = current_config() if db_path is None else _optional_config()
    tz = config.tz if config else ZoneInfo("Asia/Shanghai")
    now = parse_time(at_text, tz, "--at") if at_text else datetime.now(tz)
    store = open_store(db_path)
    found: dict[tuple[str, str], tuple[Tariff, str]] = {}
    if config is not None and Path(config.tariff_dir).is_dir():
        for path in sorted(Path(config.tariff_dir).glob("*.toml")):
            t = load_tariff(path)
            found[(t.id, version_key(t))] = (t, str(path))
    for row in store.tariff_versions():
        t = tariff_from_text(row["body"], f"head-end tariff {row['id']}")
        found[(t.id, version_key(t))] = (t, "head end")
    sources = {key: source for key, (_, source) in found.items()}
    rows = []
    for chain in combine_versions(t for t, _ in found.values()).values():
        for version, status in version_status(chain, now, tz):
            key = (version.id, version_key(version))
            rows.append({"id": version.id, "type": version.kind,
                         "effective_from": key[1] or None, "status": status,
                         "source": sources[key]})
    rows.sort(key=lambda r: (r["id"], r["effective_from"] or ""))

    def human() -> None:
        if not rows:
            click.echo("(none)")
        for r in rows:
            when = r["effective_from"] or "-"
            click.echo(f"{r['id']:<24} {r['type']:<7} {when:<26} {r['status']:<11} "
                       f"{r['source']}")

    emit(rows, as_json, human)


def _optional_config() -> Any:
    """The configuration if it loads (for `--db` on a machine without one: None)."""
    from edge_agent.cli.state import current_config

    try:
        return current_config()
    except ConfigError:
        return None


@main.group()
def bill() -> None:
    """Billing tools."""


def _load_policy(path: str | None) -> Policy:
    if path is None:
        return Policy()
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_policy(data.get("policy", data), f"{path}: [policy]")


@bill.command("replay")
@click.argument("readings", type=click.Path(exists=True, dir_okay=False))
@click.option("--tariff", "tariff_files", required=True, multiple=True,
              type=click.Path(exists=True),
              help="Tariff file to bill with; repeat for versions of one tariff "
                   "(effective_from).")
@click.option("--policy", "policy_file", default=None, type=click.Path(exists=True),
              help="TOML with a [policy] table (default: the built-in policy).")
@click.option("--opening", default="0", show_default=True, help="Opening balance, yuan.")
@click.option("--topup", "topups", multiple=True, metavar="TIMESTAMP=AMOUNT",
              help="A top-up at a time (repeat).")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@click.option("--multiplier", default=1, show_default=True, type=click.IntRange(1))
@click.option("--allowance/--no-allowance", default=False, help="Meter gets the free allowance.")
@click.option("--keep-power", "keep_power", multiple=True, metavar="METER",
              help="A keep-power meter, never tripped (repeat).")
@click.option("--relay-fail", "relay_fail", multiple=True, metavar="METER=TIMESTAMP",
              help="The first relay action of METER at or after TIMESTAMP fails (repeat).")
@click.option("--class", "classes", multiple=True, metavar="METER=CLASS",
              help="Policy class of the meter's account, from the policy file (repeat).")
@click.option("--boot", "boot", default=None, metavar="TIMESTAMP",
              help="The agent started then (startup_keep_power_minutes applies).")
@click.option("--headend-seen", "headend_seen", default=None, metavar="TIMESTAMP",
              help="Last heard from the head end then (offline_enforcement_hours applies).")
@click.option("--as-given/--sorted", "as_given", default=False,
              help="Rows in the file's order (arrival order) or sorted by time (default).")
@json_option
def bill_replay(readings: str, tariff_files: tuple[str, ...], policy_file: str | None, opening: str,
                topups: tuple[str, ...], timezone: str, multiplier: int, allowance: bool,
                keep_power: tuple[str, ...], relay_fail: tuple[str, ...],
                classes: tuple[str, ...], boot: str | None, headend_seen: str | None,
                as_given: bool, as_json: bool) -> None:
    """Run a CSV of readings (timestamp,meter,kwh[,rate1..rate4]) through a tariff and policy.

    Uses the daemon's own billing and enforcement code on a scratch database; relay actions
    are taken as confirmed unless --relay-fail says otherwise.  Rows with one timestamp next
    to each other are one poll cycle (the trip guard counts them together); an empty kwh is a
    poll the meter did not answer.  Top-ups apply at their time, also after the last reading
    (TIMESTAMP=AMOUNT, or TIMESTAMP=AMOUNT@METER with several meters).  Prints ledger
    entries, balances, alerts and relay decisions in order (JSON lines with --json).

    \b
    Example:
      edge-agent bill replay readings.csv --tariff winter.toml --opening 100 \\
          --topup 2026-12-01T09:00=50
    """
    tz = _zone(timezone)
    chains = combine_versions(load_tariff(path) for path in tariff_files)
    if len(chains) != 1:
        raise UsageError(f"--tariff: give versions of one tariff, not {', '.join(chains)}")
    [tariff_obj] = chains.values()
    policy = _load_policy(policy_file)
    try:
        opening_amount = parse_decimal(opening, "--opening", places=4)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = read_readings_csv(Path(readings), tz, as_given)
    if not rows:
        raise UsageError(f"{readings}: no readings")
    failures = tuple((m, parse_time(t, tz, "--relay-fail")) for m, t in
                     (_pair(spec, "--relay-fail", "METER=TIMESTAMP") for spec in relay_fail))
    assigned = tuple(_pair(spec, "--class", "METER=CLASS") for spec in classes)
    for _, name in assigned:
        if name not in policy.class_names:
            raise UsageError(f"--class: no class {name!r} in the policy (known: "
                             f"{', '.join(policy.class_names) or 'none'})")
    result = Replay(tariff_obj, policy, tz, opening_amount, multiplier, allowance,
                    frozenset(keep_power), failures, assigned,
                    parse_time(boot, tz, "--boot") if boot else None,
                    parse_time(headend_seen, tz, "--headend-seen") if headend_seen else None,
                    ).run(
        rows, sorted(_parse_topup(t, tz) for t in topups))
    timeline, final = result.timeline, result.balances
    if as_json:
        for item in timeline:
            click.echo(dumps(item))
        click.echo(dumps({"type": "summary", "balances": final}))
        return
    for item in timeline:
        ts = str(item["ts"])[:19]
        if item["type"] == "ledger":
            click.echo(f"{ts}  {item['kind']:<10} {item['amount']:>12}  balance "
                       f"{item['balance_after']:>12}  {item['id']}")
        elif item["type"] == "event":
            click.echo(f"{ts}  EVENT {item['event']}  {item['detail']}")
        else:
            failed = "" if item.get("ok", True) else " FAILED"
            click.echo(f"{ts}  RELAY {item['action']} {item['meter']} ({item['reason']})"
                       f"{failed}")
    emit(final, False, lambda: click.echo("final balances: " + ", ".join(
        f"{a} {b}" for a, b in final.items())))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone {name!r}: unknown time zone (e.g. Asia/Shanghai)") from None


def _parse_topup(spec: str, tz: ZoneInfo) -> tuple[datetime, Decimal, str, str | None]:
    when, sep, amount = spec.rpartition("=")
    if not sep:
        raise UsageError(f"--topup {spec!r}: use TIMESTAMP=AMOUNT[@METER]")
    amount, _, meter = amount.partition("@")
    try:
        value = parse_decimal(amount, "top-up amount", places=4)
    except ValueError as exc:
        raise UsageError(f"--topup {spec!r}: {exc}") from None
    if value <= 0:
        raise UsageError(f"--topup {spec!r}: the amount must be positive")
    moment = parse_time(when, tz, "--topup")
    meter = meter.strip()
    txn = f"replay-topup:{moment.isoformat()}:{value}" + (f":{meter}" if meter else "")
    return moment, value, txn, meter or None


def _pair(spec: str, option: str, form: str) -> tuple[str, str]:
    left, sep, right = spec.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise UsageError(f"{option} {spec!r}: use {form}")
    return left.strip(), right.strip()


__all__ = ["bill", "tariff", "tariffs_verb"]
