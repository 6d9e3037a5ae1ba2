"""Root group, global options, output and error handling shared by every verb.

Contract: exit 0 on success, 1 when the operation failed, 2 on usage or configuration errors;
errors go to stderr as one line beginning `error:`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click

from edge_agent.errors import EXPECTED_ERRORS, ConfigError, RegisterMapError, UsageError

DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"


def one_line(exc: Exception) -> str:
    """The contract wants one stderr line per error: several problems are joined with '; '."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


#: verb -> (module under edge_agent.cli that defines it, one-line help for `--help`).
#: Verbs are imported only when invoked: `edge-agent --help` and `edge-agent status` start in
#: a fraction of the time on a gateway (tests/cli/test_startup.py pins it).  A new verb
#: needs a line here; the test checks each line against its module.
VERBS: dict[str, tuple[str, str]] = {
    "backup": ("backup", "Copy the database to PATH (a file, or a directory) while it runs."),
    "balance": ("state", "Balance of one account (or all), exact, from the ledger."),
    "bill": ("billing", "Billing tools."),
    "commission": ("daemon", "Add, replace or remove a meter in the daemon's database."),
    "config": ("daemon", "Configuration files."),
    "demo": ("demo", "Simulated meters, the agent, a local broker and head end: a tour."),
    "events": ("state", "Events (alerts, relay actions, tamper, ...), newest last."),
    "frame": ("frame", "Decode or build a single DL/T 645 frame."),
    "headend": ("headend", "Act as the head end: sign and send commands, watch a gateway."),
    "keys": ("keys", "Ed25519 keys: the gateway's pair and the head end's public keys by..."),
    "ledger": ("state", "Ledger entries (newest last), with the balance after each."),
    "lineloss": ("grid", "Line loss (台区线损) per area: supply, sales, loss, rate and flags."),
    "map": ("grid", "Meters with a location as GeoJSON (the same as..."),
    "meters": ("state", "List registered meters with their last reading, relay state and..."),
    "outbox": ("state", "Messages waiting for the head end (store and forward), by kind."),
    "read": ("technician", "Read named quantities or data identifiers from one meter..."),
    "relay": ("technician", "Trip, close, alarm or keep-power a relay and confirm it from..."),
    "run": ("daemon", "Run the daemon (systemd ExecStart): poll, store, bill, enforce, sync."),
    "scan": ("technician", "Discover the meters on a bus: DL/T 645 by wildcard address..."),
    "sim": ("sim", "Run simulated meters on a pseudo-terminal (or TCP) until interrupted."),
    "status": ("state", "Health per bus and per meter: success rate, last reading, relay,..."),
    "tariff": ("billing", "Tariff files."),
    "tariffs": ("billing", "List tariff versions the daemon uses: current and pending."),
    "usage": ("grid", "A customer's daily history: kWh per rate, cost, tier position."),
}


def stderr_is_journal() -> bool:
    """Whether stderr is journald's stream (systemd sets JOURNAL_STREAM to its device:inode
    for a service; a shell started from such a service inherits the variable but not the
    stream, hence the comparison)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        found = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (found.st_dev, found.st_ino) == (device, inode)


def fail(text: str, code: int) -> None:
    """The one `error:` line and the exit code.  Under systemd the line carries journald's
    priority err (`<3>`), or `journalctl -p err` would not show why the service stopped."""
    click.echo(f"{'<3>' if stderr_is_journal() else ''}error: {text}", err=True)
    sys.exit(code)


class AgentGroup(click.Group):
    """A group that reports every failure as one `error:` line with the contract's exit code,
    and imports a verb's module only when that verb runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(VERBS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in VERBS:
            importlib.import_module(f"edge_agent.cli.{VERBS[cmd_name][0]}")  # registers it
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verb list from `VERBS`, without importing every module to read its help."""
        rows = [(name, VERBS[name][1] if name in VERBS else
                 self.commands[name].get_short_help_str(80)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            fail(" ".join(exc.format_message().split()), 2)
        except (ConfigError, UsageError, RegisterMapError) as exc:
            fail(one_line(exc), 2)
        except EXPECTED_ERRORS as exc:
            fail(one_line(exc), 1)
        except click.Abort:
            fail("aborted", 1)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(0)


@click.group(cls=AgentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    default=lambda: os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG),
    show_default="/etc/edge-agent/agent.toml or $EDGE_AGENT_CONFIG",
    help="Agent configuration file (TOML).",
)
@click.option("--json", "as_json", is_flag=True, help="Print data as JSON.")
@click.version_option(package_name="edge-agent")
@click.pass_context
def main(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Prepaid electricity at the edge: meters, balances, relays and the head-end link."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["json"] = as_json


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--json` on a verb, equivalent to the global one."""
    return click.option("--json", "as_json", is_flag=True, help="Print data as JSON.")(func)


def wants_json(as_json: bool) -> bool:
    ctx = click.get_current_context()
    root = ctx.find_root()
    return bool(as_json or (root.obj or {}).get("json"))


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[attr-defined]
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: object) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False, sort_keys=False)


def emit(data: object, as_json: bool, human: Callable[[], None] | None = None) -> None:
    """Print `data` as JSON or, for people, through `human` (default: key: value lines)."""
    if wants_json(as_json):
        click.echo(dumps(data))
    elif human is not None:
        human()
    elif isinstance(data, dict):
        for key, value in data.items():
            click.echo(f"{key}: {value}")
    else:
        click.echo(str(data))


def progress(message: str) -> None:
    """Progress for long work goes to stderr, so `--json` output stays clean."""
    click.echo(message, err=True)
