"""Property tests of the prepaid core on real SQLite files."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.prepaid.enforcement import protection
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.records import LedgerEntry
from tests.helpers import TZ, at, energy_poll, processor

START = at("2026-11-22 00:00")
steps = st.lists(st.tuples(st.integers(0, 4000), st.integers(-5, 180)), min_size=1,
                 max_size=25)  # (0.01 kWh increments, minutes later; negative = clock jump)
topups = st.lists(st.integers(1, 20000), max_size=6)  # in 0.01 yuan


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, topups, st.randoms(use_true_random=False), st.integers(0, 3))
def test_balance_is_opening_plus_topups_minus_exact_cost(steps, topups, rnd, dup) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = processor(Path(tmp) / "p.db", policy=Policy(alarm_grace=timedelta(0)))
        opening = LedgerEntry("open-A1", "A1", "opening", D("12.3456"), START)
        entries = [LedgerEntry(f"pay-{i}", "A1", "topup", D(c) / 100, START)
                   for i, c in enumerate(topups)]
        delivery = entries + rnd.sample(entries, min(dup, len(entries)))  # repeats
        rnd.shuffle(delivery)
        kwh, ts = D("100.00"), START
        p.apply_entries([opening], START)
        for index, (units, minutes) in enumerate(steps):
            kwh += D(units) / 100
            ts += timedelta(minutes=minutes)
            p.process([energy_poll("000000000001", ts, str(kwh))], ts)
            if delivery and index % 2 == 0:
                p.apply_entries([delivery.pop()], ts)
        p.apply_entries(delivery, ts)
        expected = (D("12.3456") + sum((e.amount for e in entries), D(0))
                    - (kwh - D("100.00")) * D("0.56"))
        assert p.store.balance("A1") == expected == p.store.ledger_sum("A1")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 240), st.integers(0, 3000)),
                min_size=1, max_size=25))
def test_no_trip_above_cutoff_or_in_protected_window(plan) -> None:
    policy = Policy(alarm_grace=timedelta(minutes=20), protected_hours=((22 * 60, 6 * 60),),
                    overdraft=D("2"))
    with tempfile.TemporaryDirectory() as tmp:
        p = processor(Path(tmp) / "p.db", policy=policy)
        kwh, ts = D("100.00"), START
        for index, (units, minutes, topup) in enumerate(plan):
            kwh += D(units) / 100
            ts += timedelta(minutes=minutes)
            if topup % 4 == 0:
                p.apply_entries([LedgerEntry(f"t{index}", "A1", "topup", D(topup) / 100, ts)],
                                ts)
            decisions = p.process([energy_poll("000000000001", ts, str(kwh))], ts)
            for d in decisions:
                if d.action == "trip":
                    assert p.store.balance("A1") <= policy.cutoff_level
                    assert protection(policy, ts, TZ, False) is None
                p.relay_done(d, True, ts, "open" if d.action == "trip" else "closed")
