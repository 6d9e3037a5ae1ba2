"""`edge-agent run --once`: validate a configuration on the real meters before enabling the
service.

Each bus is polled once, with the daemon's own drivers; the readings go through the daemon's
own billing and enforcement, on a scratch copy of the database, so what is printed is exactly
what the service would store and decide.  No relay is switched and the real database is not
written.  The daemon must not be running (it owns the ports).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from edge_agent.config import Config
from edge_agent.errors import Conflict

from .output import two_places
from .root import dumps, wants_json


def run_once(config: Config, as_json: bool) -> None:
    from edge_agent.runtime import control

    if control.call(config.control_socket, {"op": "ping"}, timeout=2.0) is not None:
        raise Conflict("the daemon is running and owns the ports: stop it first "
                       "(systemctl stop edge-agent), or use edge-agent read")
    with tempfile.TemporaryDirectory(prefix="edge-agent-once-") as scratch:
        result = _poll_once(_scratch_config(config, Path(scratch)))
    if wants_json(as_json):
        click.echo(dumps(result))
        return
    _print(result)


def _scratch_config(config: Config, folder: Path) -> Config:
    """The configuration on a copy of its database (or a new one): nothing real is written."""
    target = folder / "agent.db"
    source = Path(config.database)
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
    return dataclasses.replace(config, database=str(target),
                               control_socket=str(folder / "control.sock"))


def _poll_once(config: Config) -> dict[str, Any]:
    from edge_agent.runtime.daemon import Agent
    from edge_agent.runtime.systemd import Notifier

    agent = Agent(config, notifier=Notifier(None))
    buses = []
    try:
        for bus in config.buses:
            driver = agent.workers[bus.name].driver
            meters = [m for m in agent.store.meters() if m.bus == bus.name]
            now = agent.clock.now()
            polls = [driver.poll(m.address, bus.quantities, now) for m in meters]
            decisions = agent.processor.process(polls, agent.clock.now())
            driver.close()
            buses.append({"bus": bus.name, "port": bus.port, "readings": [
                {"meter": p.meter, "answered": p.ok,
                 "kwh": str(p.energy.kwh) if p.energy is not None else None,
                 "relay": p.relay, "error": p.error} for p in polls],
                "would_do": [{"meter": d.meter, "action": d.action, "reason": d.reason}
                             for d in decisions if d.action is not None],
                "balances": {m.account: agent.store.balance(m.account) for m in meters}})
    finally:
        agent.processing.shutdown(wait=True)
        agent.store.close()
    return {"buses": buses, "relay_actions_taken": 0}


def _print(result: dict[str, Any]) -> None:
    for bus in result["buses"]:
        answered = sum(r["answered"] for r in bus["readings"])
        click.echo(f"bus {bus['bus']} ({bus['port']}): {answered} of "
                   f"{len(bus['readings'])} meter(s) answered")
        for r in bus["readings"]:
            if r["answered"]:
                click.echo(f"  {r['meter']}  {two_places(r['kwh']):>10} kWh  relay "
                           f"{r['relay'] or '?'}")
            else:
                click.echo(f"  {r['meter']}  NO ANSWER: {r['error']}"[:80])
        for d in bus["would_do"]:
            click.echo(f"  would {d['action']} {d['meter']} ({d['reason']})"[:80])
        if not bus["would_do"]:
            click.echo("  no relay action would be taken")
    click.echo("nothing switched, nothing stored (run --once)")
