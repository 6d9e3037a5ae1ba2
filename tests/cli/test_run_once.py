"""`run --once`: one poll of each bus, what was read and what would be decided; no relay
switched, the real database untouched (issue 12)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from firmware_sim.bus import SimBus
from tests.helpers import agent_config


def test_run_once_reads_and_says_what_it_would_do_without_doing_it(sim_bus: SimBus,
                                                                   tmp_path: Path) -> None:
    sim_bus.meter("000000000001").add_energy(Decimal("12.34"))
    sim_bus.meter("000000000002").fault = "silent"
    path = agent_config(tmp_path, sim_bus.port, ["000000000001", "000000000002"])
    result = CliRunner().invoke(main, ["--config", str(path), "run", "--once"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bus bus1 (") and "1 of 2 meter(s) answered" in lines[0]
    assert any(line.strip().startswith("000000000001") and "kWh" in line for line in lines)
    assert any("000000000002  NO ANSWER" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1] == "nothing switched, nothing stored (run --once)"
    assert not (tmp_path / "agent.db").exists()  # the real database was not even created
    assert not sim_bus.meter("000000000001").relay_open

    result = CliRunner().invoke(main, ["--config", str(path), "run", "--once", "--json"])
    data = json.loads(result.stdout)
    [bus] = data["buses"]
    assert [r["answered"] for r in bus["readings"]] == [True, False]
    assert data["relay_actions_taken"] == 0


def test_read_without_port_uses_the_configured_bus(sim_bus: SimBus, tmp_path: Path) -> None:
    sim_bus.meter("000000000003").add_energy(Decimal("7.25"))
    path = agent_config(tmp_path, sim_bus.port, ["000000000003"])
    result = CliRunner().invoke(main, ["--config", str(path), "read", "-a", "000000000003",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["value"] == "7.25"
    result = CliRunner().invoke(main, ["--config", str(path), "read", "-a", "000000000004"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: give --port: meter 000000000004 is not in")
