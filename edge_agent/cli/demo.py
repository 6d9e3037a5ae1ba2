"""`edge-agent demo`: everything on simulators, one command, no set-up."""

from __future__ import annotations

import logging

import click

from .root import emit, json_option, main


@main.command()
@click.option("--offline", is_flag=True, help="Do not start a broker even if mosquitto exists.")
@click.option("--pause", is_flag=True, help="Wait for Enter between steps.")
@json_option
def demo(offline: bool, pause: bool, as_json: bool) -> None:
    """Simulated meters, the agent, a local broker and head end: readings, a low-balance
    alert, a cutoff, a signed top-up and the restore.  Cleans up after itself."""
    from edge_agent.demo import Demo
    from edge_agent.errors import EXPECTED_ERRORS

    from .root import wants_json

    quiet = wants_json(as_json)

    def say(text: str) -> None:
        click.echo(text, err=quiet)

    run = Demo(say, use_broker=not offline,
               pause=(lambda: click.prompt("press Enter", default="", show_default=False,
                                           err=True)) if pause else (lambda: None))
    # The demo tells each event in its steps; the daemon's journal line of the same event
    # would print it twice (other warnings and errors still show).
    events_log, told = logging.getLogger("edge_agent.events"), logging.NullHandler()
    events_log.addHandler(told)
    try:
        summary = run.run()
    except EXPECTED_ERRORS:
        raise
    finally:
        run.close()
        events_log.removeHandler(told)

    def human() -> None:
        click.echo("")
        click.echo(f"summary ({summary['mode']} mode, {summary['seconds']} s): "
                   f"{summary['meters']} meters, {summary['readings']} readings stored, "
                   f"{summary['ledger_entries']} ledger entries")
        click.echo("  events: " + ", ".join(f"{k} {v}" for k, v in summary["events"].items()))
        click.echo("  balances: " + ", ".join(f"{k} {v}" for k, v in
                                             summary["balances"].items()))
        if "concentrator" in summary:
            c = summary["concentrator"]
            click.echo(f"  concentrator: {c['backfill_charges']} charges from freezes, line "
                       f"loss {c['normal_rate']} -> {c['theft_rate']} with theft")
        if "head_end" in summary:
            h = summary["head_end"]
            click.echo(f"  head end received {h['readings_received']} readings, "
                       f"{h['ledger_entries_received']} ledger entries, {h['events_received']} "
                       f"events; seq gaps {h['seq']['gaps'] or 'none'}")

    emit(summary, as_json, human)
