"""A reload that passed its checks but fails while being applied (a storage error half-way):
the daemon stays up on the previous configuration, says so at err, and applies nothing.

No input is known to reach this (the checks come first), so the failure is injected: the
guard is what keeps a SIGHUP from ever stopping the daemon."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import StorageError
from edge_agent.runtime.daemon import Agent
from tests.helpers import agent_config

M1, M2 = "000000000001", "000000000002"


def test_a_reload_that_fails_half_way_leaves_the_previous_configuration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = agent_config(tmp_path, "/dev/null", [M1], policy='overdraft = "1.00"')
    agent = Agent(load_config(config))
    try:
        before = agent.config
        agent_config(tmp_path, "/dev/null", [M1, M2], policy='overdraft = "9.00"')

        def broken(new: object) -> None:
            raise StorageError("disk I/O error")

        monkeypatch.setattr(agent, "apply_accounts", broken)
        with caplog.at_level(logging.ERROR, logger="edge_agent"):
            notes = agent.reload()
        assert notes and notes[0].startswith("refused: disk I/O error")
        assert agent.config is before
        assert str(agent.processor.policy.overdraft) == "1.00"
        assert [m.address for m in agent.store.meters()] == [M1]  # M2's step rolled back
        assert set(agent.processor.billing) == {M1}
        assert any("reload failed while applying" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.ERROR)
        monkeypatch.undo()
        assert agent.reload()[-1].startswith("reloaded")  # a good reload still works
        assert [m.address for m in agent.store.meters()] == [M1, M2]
    finally:
        agent.processing.shutdown()
        agent.store.close()
