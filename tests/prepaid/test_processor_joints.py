"""The processor where it meets the rest: a stale cache, a removed meter, a resent top-up.

Each of these was a defect found by review: one meter the cache did not know stopped billing
and enforcement of every meter on its bus; a removed meter's relay outcome put it back into
enforcement; a top-up resent under a new sequence number hid the payment really missing.
"""

from __future__ import annotations

import logging
from decimal import Decimal as D

from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import MeterRecord
from tests.helpers import at, energy_poll, numbered_topup, processor

M1, M2, M3 = "000000000001", "000000000002", "000000000003"


def test_a_meter_registered_behind_the_processors_back_is_billed_with_the_others(
        tmp_path) -> None:
    """`commission add --db` while the daemon runs: the store knows the meter, the cache
    does not.  The cycle bills every meter, the new one included, instead of failing."""
    proc = processor(tmp_path / "a.db", meters=2, initial="0.00")
    proc.process([energy_poll(M1, at("2026-11-22 08:00"), "0.00"),
                  energy_poll(M2, at("2026-11-22 08:00"), "0.00")], at("2026-11-22 08:00"))
    proc.store.add_meter(MeterRecord(M3, "bus1", "A3", "flat"), D("0.00"),
                         at("2026-11-22 08:05"))
    polls = [energy_poll(M1, at("2026-11-22 09:00"), "1.00"),
             energy_poll(M2, at("2026-11-22 09:00"), "2.00"),
             energy_poll(M3, at("2026-11-22 09:00"), "3.00")]
    proc.process(polls, at("2026-11-22 09:00"))
    for account, used in (("A1", "1.00"), ("A2", "2.00"), ("A3", "3.00")):
        assert -proc.store.balance(account) == proc.tariffs["flat"].price * D(used), account
    assert M3 in proc.billing and M3 in proc.enforcement


def test_a_poll_of_a_meter_nobody_registered_is_skipped_not_the_whole_cycle(
        tmp_path, caplog) -> None:
    proc = processor(tmp_path / "a.db", meters=1, initial="0.00")
    proc.process([energy_poll(M1, at("2026-11-22 08:00"), "0.00")], at("2026-11-22 08:00"))
    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        proc.process([energy_poll(M1, at("2026-11-22 09:00"), "1.00"),
                      energy_poll("000000000099", at("2026-11-22 09:00"), "5.00")],
                     at("2026-11-22 09:00"))
        proc.process([energy_poll("000000000099", at("2026-11-22 10:00"), "6.00")],
                     at("2026-11-22 10:00"))
    assert proc.store.balance("A1") < 0  # M1 billed all the same
    warned = [r for r in caplog.records if "000000000099" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # once, not per cycle
    assert "not registered" in warned[0].getMessage()
    assert proc.store.meter("000000000099") is None  # nothing invented for it


def test_the_outcome_of_a_removed_meters_trip_does_not_put_it_back(tmp_path) -> None:
    proc = processor(tmp_path / "a.db", meters=1, initial="1.00")
    proc.process([energy_poll(M1, at("2026-11-22 08:00"), "0.00")], at("2026-11-22 08:00"))
    decisions = proc.process([energy_poll(M1, at("2026-11-22 12:00"), "50.00")],
                             at("2026-11-22 12:00"))
    while decisions and decisions[0].action != "trip":  # alarm first, then the trip
        proc.relay_done(decisions[0], True, at("2026-11-22 12:00"))
        decisions = proc.process([energy_poll(M1, at("2026-11-22 13:00"), "50.00")],
                                 at("2026-11-22 13:00"))
    [trip] = decisions
    proc.store.remove_meter(M1)
    proc.reload()
    assert M1 not in proc.enforcement
    proc.relay_done(trip, True, at("2026-11-22 13:00"), "open")  # it was on the wire
    assert M1 not in proc.enforcement
    assert proc.store.events(types=["relay_tripped"])  # what happened is still recorded
    _, restore = proc.apply_entries(
        [LedgerEntry("pay-1", "A1", "topup", D("50"), at("2026-11-22 14:00"))],
        at("2026-11-22 14:00"))
    assert restore == []  # no close for a meter that may be in another house by now


def test_a_topup_resent_under_a_new_number_does_not_hide_the_missing_one(tmp_path) -> None:
    proc = processor(tmp_path / "a.db")

    def topup(seq: int, txn: str) -> list:
        return numbered_topup(proc, seq, txn)

    assert topup(1, "t1") and topup(3, "t3")  # 2 is missing
    assert topup(2, "t1") == []  # t1 again, wrongly numbered 2: applies nothing ...
    assert proc.store.topup_sequence("A1") == (1, frozenset({3}))  # ... and 2 stays missing
    assert not proc.store.events(types=["topup_gap_closed"])
    assert proc.store.balance("A1") == D("20")  # t1 and t3, once each
