"""The collection success rate's 24-hour window (`Processor._count_day`): exact counts over
hourly buckets, and a bounded memory per meter however long the daemon runs."""

from __future__ import annotations

import sys
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.prepaid.records import Poll
from tests.helpers import at, processor

START = at("2026-11-22 08:00")
METER = "000000000001"


def reference(history: list[tuple[int, bool]], hour: int) -> tuple[int, int]:
    """Polls and replies whose hour is among the 24 ending with `hour` (the definition)."""
    window = [ok for h, ok in history if hour - 24 < h <= hour]
    return len(window), sum(window)


def test_counts_follow_the_last_24_hours(tmp_path) -> None:
    proc = processor(tmp_path / "a.db")
    history: list[tuple[int, bool]] = []
    # Every 20 minutes for three days; one poll in four unanswered.
    for n in range(3 * 72):
        ts = START + timedelta(minutes=20 * n)
        ok = n % 4 != 3
        hour = int(ts.timestamp()) // 3600
        history.append((hour, ok))
        counts = proc._count_day([Poll(METER, ts, ok)])
        assert counts[METER] == reference(history, hour), ts
    assert counts[METER] == (72, 54)


def test_a_gap_longer_than_a_day_forgets_everything_before_it(tmp_path) -> None:
    proc = processor(tmp_path / "a.db")
    for n in range(10):
        proc._count_day([Poll(METER, START + timedelta(minutes=5 * n), True)])
    later = START + timedelta(hours=30)
    assert proc._count_day([Poll(METER, later, False)])[METER] == (1, 0)
    # 23 hours later the first poll of this window is still in it; 24 hours later it is not.
    assert proc._count_day([Poll(METER, later + timedelta(hours=23), True)])[METER] == (2, 1)
    assert proc._count_day([Poll(METER, later + timedelta(hours=24), True)])[METER] == (2, 2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=60))
def test_any_forward_sequence_matches_the_definition(tmp_path_factory, steps) -> None:
    proc = processor(tmp_path_factory.mktemp("w") / "a.db")
    ts, history = START, []
    for minutes, ok in steps:
        ts += timedelta(minutes=minutes)
        hour = int(ts.timestamp()) // 3600
        history.append((hour, ok))
        assert proc._count_day([Poll(METER, ts, ok)])[METER] == reference(history, hour)


def test_memory_per_meter_is_bounded(tmp_path) -> None:
    """A day or a month of polls takes the same few hundred bytes per meter."""
    proc = processor(tmp_path / "a.db", meters=3)
    meters = [f"{n:012d}" for n in range(1, 4)]

    def size() -> int:
        return sum(sys.getsizeof(proc.day_window[m]) for m in meters)

    for n in range(4 * 24):  # a day of 15-minute polls
        proc._count_day([Poll(m, START + timedelta(minutes=15 * n), True) for m in meters])
    day = size()
    for n in range(4 * 24, 4 * 24 * 30):  # a month
        proc._count_day([Poll(m, START + timedelta(minutes=15 * n), True) for m in meters])
    assert size() == day <= 3 * 300
