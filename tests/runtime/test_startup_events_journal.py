"""What the daemon records while it starts (before its loop) reaches the journal too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.runtime.daemon import Agent
from tests.helpers import agent_config


def test_a_meter_deactivated_at_start_is_in_the_journal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The technician drops a meter from agent.toml and restarts the daemon: the
    `meter_deactivated` warning, stored while the agent starts, must reach the journal (at
    warning), not only SQLite."""
    meter = "000000000007"
    agent = Agent(load_config(agent_config(tmp_path, "/dev/null", [meter])))
    agent.processing.shutdown()
    agent.store.close()
    agent = Agent(load_config(agent_config(tmp_path, "/dev/null", [])))  # restarted
    try:
        with caplog.at_level(logging.INFO, logger="edge_agent.events"):
            agent.journal_events()  # what the loop does first, then every turn
        lines = [(r.levelno, r.getMessage()) for r in caplog.records
                 if r.name == "edge_agent.events"]
        assert any(level >= logging.WARNING and message.startswith("meter_deactivated")
                   and meter in message for level, message in lines), lines
    finally:
        agent.processing.shutdown()
        agent.store.close()
