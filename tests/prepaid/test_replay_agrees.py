"""Replay and the daemon's way of driving the Processor agree on the same input (issue 14)."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.prepaid.money import format_money
from edge_agent.prepaid.policy import Policy
from edge_agent.prepaid.processor import Processor
from edge_agent.prepaid.records import LedgerEntry, Poll, RegisterReading
from edge_agent.prepaid.replay import Replay
from edge_agent.prepaid.tariff import load_tariff
from edge_agent.store import MeterRecord, Store
from tests.helpers import TARIFFS, TZ, at

START = at("2026-11-22 06:00")


def daemon_like(rows, topups, tariff, policy) -> tuple[dict[str, str], list[tuple]]:
    """What the daemon does: meters commissioned at their first reading, one `process` per
    cycle, every relay action confirmed, head-end top-ups through `apply_entries`."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "d.db")
        meters = sorted({r[1] for r in rows})
        for meter in meters:
            ts, kwh = min((r[0], r[2]) for r in rows if r[1] == meter)
            store.add_meter(MeterRecord(meter, "b", f"account-{meter}", tariff.id), kwh, ts)
        proc = Processor(store, {tariff.id: tariff}, policy, TZ, "replay")
        actions = []

        def carry(decisions, now) -> None:
            for d in decisions:
                proc.relay_done(d, True, now, "open" if d.action == "trip" else "closed")
                actions.append((d.meter, d.action, now))

        pending = sorted(topups)
        by_time: dict = {}
        for row in rows:
            by_time.setdefault(row[0], []).append(row)
        for ts in sorted(by_time):
            while pending and pending[0][0] <= ts:
                when, amount, txn, meter = pending.pop(0)
                carry(proc.apply_entries([LedgerEntry(txn, f"account-{meter}", "topup",
                                                      amount, when)], when)[1], when)
            carry(proc.process([Poll(m, ts, True, RegisterReading(m, ts, kwh))
                                for _, m, kwh, _ in by_time[ts]], ts), ts)
        for when, amount, txn, meter in pending:
            carry(proc.apply_entries([LedgerEntry(txn, f"account-{meter}", "topup", amount,
                                                  when)], when)[1], when)
        balances = {f"account-{m}": format_money(store.balance(f"account-{m}")) for m in meters}
        store.close()
        return balances, actions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meters=st.integers(1, 3), steps=st.lists(st.integers(0, 400), min_size=2, max_size=12),
       topups=st.lists(st.tuples(st.integers(0, 14 * 60), st.integers(1, 30), st.integers(0, 2)),
                       max_size=3),
       tariff=st.sampled_from(["flat", "residential-tou", "guangdong-tou-tiers",
                               "flat-lowincome"]))
def test_replay_and_daemon_agree(meters, steps, topups, tariff) -> None:
    t = load_tariff(TARIFFS / f"{tariff}.toml")
    policy = Policy(alarm_grace=timedelta(0), trip_guard_min=3)
    rows = []
    for n in range(1, meters + 1):
        kwh = D("100.00")
        for index, step in enumerate(steps):
            kwh += D(step * n) / 100
            rows.append((START + timedelta(hours=index), f"m{n}", kwh, None))
    rows.sort(key=lambda r: r[0])
    ups = [(START + timedelta(minutes=m), D(a), f"t{i}", f"m{min(k, meters - 1) + 1}")
           for i, (m, a, k) in enumerate(topups)]
    result = Replay(t, policy, TZ).run(rows, ups)
    balances, actions = daemon_like(rows, ups, t, policy)
    assert result.balances == balances
    replayed = [(x["meter"], x["action"]) for x in result.timeline if x["type"] == "relay"]
    assert replayed == [(m, a) for m, a, _ in actions]
