"""The daemon records when it last heard from the head end (issue 14: offline horizon)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.system.test_mqtt import running, sim  # noqa: F401  (the sim fixture)


def test_connected_daemon_records_headend_last_seen(tmp_path, broker, sim) -> None:  # noqa: F811
    with running(tmp_path, broker, sim) as (agent, head):
        assert head.wait_for(lambda: agent.store.headend_last_seen() is not None)
        seen = agent.store.headend_last_seen()
        assert seen is not None
        assert abs(datetime.now(seen.tzinfo) - seen) < timedelta(seconds=30)
        assert agent.processor.hold is None  # heard just now: enforcement as usual
