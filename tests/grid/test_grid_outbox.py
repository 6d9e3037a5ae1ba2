"""`lineloss` and `usage` are queued for the head end once per result: a day closed again (after
a restart, on a reopened database) with the same result queues nothing; a changed result is
queued again (the head end keeps the last per key)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

from edge_agent.grid.lineloss import line_loss
from edge_agent.store import Store

T0, T1 = datetime(2026, 4, 1, 16, tzinfo=UTC), datetime(2026, 4, 2, 16, tzinfo=UTC)
DAY = date(2026, 4, 2)


def usage(kwh: str, block_used: str) -> dict[str, object]:
    return {"account": "acct", "meter": "000000000001", "day": DAY.isoformat(), "kwh": kwh,
            "rates": {}, "cost": "12.0000", "tariff": "flat",
            "tier": {"period": "2026-04", "block": 1, "block_used": block_used}, "allowance": None}


def kinds(store: Store) -> list[str]:
    return [kind for _, kind, _ in store.pending(100)]


def test_same_results_after_reopening_are_not_queued_again(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    partial = line_loss("a", "day", T0, T1, D("100"), {"x": D("60"), "y": None}, D("0.08"))
    store = Store(path)
    with store.transaction():
        assert store.save_line_loss(partial)
        assert store.save_usage("acct", DAY, usage("24.00", "24.00"))
    store.close()
    store = Store(path)  # a restart
    with store.transaction():
        assert not store.save_line_loss(partial)
        # the running tier position moved on; the day's figures did not
        assert not store.save_usage("acct", DAY, usage("24.00", "30.00"))
    assert kinds(store) == ["lineloss", "usage"]
    assert store.usage("acct")[0]["tier"]["block_used"] == "24.00"  # what was sent is kept
    complete = line_loss("a", "day", T0, T1, D("100"), {"x": D("60"), "y": D("30")}, D("0.08"))
    with store.transaction():
        assert store.save_line_loss(complete)  # a backfill completed the day
        assert store.save_usage("acct", DAY, usage("25.00", "31.00"))  # corrected figures
    assert kinds(store) == ["lineloss", "usage", "lineloss", "usage"]
    last = json.loads(store.pending(100)[2][2])
    assert last["incomplete"] is False and last["rate"] == "0.1000"
    store.close()


def two_meters(kwh: tuple[str, str], block_used: tuple[str, str]) -> dict[str, object]:
    parts = [{"meter": f"00000000000{n}", "kwh": k, "rates": {}, "tariff": "flat",
              "tier": {"period": "2026-04", "block": 1, "block_used": b}, "allowance": None}
             for n, k, b in zip((1, 2), kwh, block_used, strict=True)]
    return {"account": "acct", "meter": None, "day": DAY.isoformat(),
            "kwh": str(sum(D(k) for k in kwh)), "rates": {}, "cost": "12.0000",
            "tariff": "flat", "tier": None, "allowance": None, "meters": parts,
            "missing_meters": []}


def test_an_accounts_meters_running_positions_are_not_a_change(tmp_path: Path) -> None:
    """Each meter's tier position in an account's day is the position when the day was
    first closed, like the top-level one: it moving on is not news; a meter's kWh is."""
    store = Store(tmp_path / "agent.db")
    with store.transaction():
        assert store.save_usage("acct", DAY, two_meters(("24.00", "12.00"), ("24", "12")))
        assert not store.save_usage("acct", DAY, two_meters(("24.00", "12.00"), ("30", "15")))
        assert store.save_usage("acct", DAY, two_meters(("24.00", "13.00"), ("30", "15")))
    assert kinds(store) == ["usage", "usage"]
    store.close()


def test_a_day_kept_before_the_upgrade_is_not_sent_again_for_the_same_figures(
        tmp_path: Path) -> None:
    """The daemon closes yesterday again after an upgrade: a one-meter day kept without
    `meters` is not news when its figures are the same; an account whose several meters
    were kept as one meter's day is (its kWh are the sum now)."""
    store = Store(tmp_path / "agent.db")
    one = two_meters(("24.00", "12.00"), ("24", "12"))
    one["meters"] = one["meters"][:1]  # type: ignore[index]
    one["kwh"], one["meter"] = "24.00", "000000000001"
    old = {k: v for k, v in one.items() if k not in ("meters", "missing_meters")}
    with store.transaction():
        assert store.save_usage("acct", DAY, old)
        assert not store.save_usage("acct", DAY, one)
        assert store.save_usage("acct", DAY, two_meters(("24.00", "12.00"), ("24", "12")))
    assert kinds(store) == ["usage", "usage"]
    store.close()
