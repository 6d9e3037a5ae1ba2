"""`tariff check` and `bill replay`: check a tariff before deploying it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from edge_agent.errors import ConfigError, EdgeAgentError, TariffError, UsageError
from edge_agent.prepaid.money import parse_decimal
from edge_agent.prepaid.policy import Policy, parse_policy
from edge_agent.prepaid.replay import Replay, parse_time, read_readings_csv
from edge_agent.prepaid.tariff import load_tariff

from .root import dumps, emit, json_option, main


@main.group()
def tariff() -> None:
    """Tariff files."""


@tariff.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
def tariff_check(files: tuple[str, ...], as_json: bool) -> None:
    """Validate tariff files; print each error with its location (exit 1 on any error)."""
    results = []
    for path in files:
        try:
            t = load_tariff(path)
            results.append({"file": path, "ok": True, "id": t.id, "type": t.kind,
                            "errors": []})
        except TariffError as exc:
            results.append({"file": path, "ok": False, "errors": exc.problems})

    def human() -> None:
        for r in results:
            if r["ok"]:
                click.echo(f"{r['file']}: ok ({r['type']} tariff {r['id']})")
            for problem in r["errors"]:
                click.echo(problem)

    emit(results, as_json, human)
    failed = [r for r in results if not r["ok"]]
    if failed:
        count = sum(len(r["errors"]) for r in failed)
        # The check ran and found the file invalid: an operation failure (exit 1), as for
        # `frame decode` of an invalid frame.
        raise EdgeAgentError(f"{count} error(s) in {len(failed)} file(s)")


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
@click.option("--tariff", "tariff_file", required=True, type=click.Path(exists=True),
              help="Tariff file to bill with.")
@click.option("--policy", "policy_file", default=None, type=click.Path(exists=True),
              help="TOML with a [policy] table (default: the built-in policy).")
@click.option("--opening", default="0", show_default=True, help="Opening balance, yuan.")
@click.option("--topup", "topups", multiple=True, metavar="TIMESTAMP=AMOUNT",
              help="A top-up at a time (repeat).")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@click.option("--multiplier", default=1, show_default=True, type=click.IntRange(1))
@click.option("--allowance/--no-allowance", default=False, help="Meter gets the free allowance.")
@json_option
def bill_replay(readings: str, tariff_file: str, policy_file: str | None, opening: str,
                topups: tuple[str, ...], timezone: str, multiplier: int, allowance: bool,
                as_json: bool) -> None:
    """Run a CSV of readings (timestamp,meter,kwh[,rate1..rate4]) through a tariff and policy.

    Uses the daemon's own billing and enforcement code on a scratch database; relay actions
    are taken as confirmed.  Prints ledger entries, balances, alerts and relay decisions in
    time order (JSON lines with --json).

    \b
    Example:
      edge-agent bill replay readings.csv --tariff winter.toml --opening 100 \\
          --topup 2026-12-01T09:00=50
    """
    tz = _zone(timezone)
    tariff_obj = load_tariff(tariff_file)
    policy = _load_policy(policy_file)
    try:
        opening_amount = parse_decimal(opening, "--opening", places=4)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = read_readings_csv(Path(readings), tz)
    if not rows:
        raise UsageError(f"{readings}: no readings")
    result = Replay(tariff_obj, policy, tz, opening_amount, multiplier, allowance).run(
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
            click.echo(f"{ts}  RELAY {item['action']} {item['meter']} ({item['reason']})")
    emit(final, False, lambda: click.echo("final balances: " + ", ".join(
        f"{a} {b}" for a, b in final.items())))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone {name!r}: unknown time zone (e.g. Asia/Shanghai)") from None


def _parse_topup(spec: str, tz: ZoneInfo) -> tuple[datetime, Decimal, str]:
    when, sep, amount = spec.rpartition("=")
    if not sep:
        raise UsageError(f"--topup {spec!r}: use TIMESTAMP=AMOUNT")
    try:
        value = parse_decimal(amount, "top-up amount", places=4)
    except ValueError as exc:
        raise UsageError(f"--topup {spec!r}: {exc}") from None
    moment = parse_time(when, tz, "--topup")
    return moment, value, f"replay-topup:{moment.isoformat()}:{value}"



__all__ = ["bill", "tariff"]
