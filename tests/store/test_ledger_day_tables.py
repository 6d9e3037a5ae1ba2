"""Schema 9: the gateway's ledger entries in one table per UTC day, folded and dropped whole.

What must not change for anyone reading the ledger: one `seq` order across the tables (a
top-up between two charges sits between them, in listings, `sync` and the outbox's
references), balance = sum of entries before and after a fold, and nothing unacknowledged
folded.  And what the tables are for: a folded day's table is gone, not rewritten.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.config import RetentionConfig
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import SCHEMA_VERSION, Store
from edge_agent.store import database as database_module
from edge_agent.store.ledger import ledger_day_table

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY0 = int(T0.timestamp()) // 86400
POLICY = RetentionConfig(ledger_detail_days=2)


def _charge(meter: int, hour: int, amount: str = "-0.25") -> LedgerEntry:
    ts = T0 + timedelta(hours=hour)
    return LedgerEntry(f"gw1:charge:m{meter}:{hour}", f"A{meter}", "charge", Decimal(amount),
                       ts, f"m{meter}")


def _topup(n: int, hour: int, account: str = "A0") -> LedgerEntry:
    return LedgerEntry(f"pay-{n}", account, "topup", Decimal("10"), T0 + timedelta(hours=hour))


def _ack_all(store: Store) -> None:
    store.acknowledge([seq for seq, _, _ in store.pending(limit=10**9)])


def _tables(store: Store) -> set[str]:
    return {r[0] for r in store.conn.execute("SELECT name FROM sqlite_schema WHERE "
                                             "type='table' AND name GLOB 'ledger_d[0-9]*'")}


def _exact(store: Store) -> None:
    for account, balance in store.balances().items():
        assert store.ledger_sum(account) == balance, account


def _days_of_charges(store: Store, days: int, meters: int = 2) -> None:
    for hour in range(days * 24):
        store.append_ledger_entries([_charge(m, hour) for m in range(meters)])


def test_one_seq_order_across_the_tables(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.append_ledger_entries([_charge(0, 23), _charge(1, 23)])          # day 0
    store.append_ledger_entries([_topup(1, 23)], origin="headend")          # `ledger`
    store.append_ledger_entries([_charge(0, 24), _charge(1, 25)])          # day 1
    assert _tables(store) == {ledger_day_table(DAY0), ledger_day_table(DAY0 + 1)}
    assert [r[0] for r in store.conn.execute("SELECT id FROM ledger")] == ["pay-1"]
    listed = store.ledger(limit=100)
    assert [e["seq"] for e in listed] == [1, 2, 3, 4, 5]
    assert [e["id"] for e in listed] == ["gw1:charge:m0:23", "gw1:charge:m1:23", "pay-1",
                                         "gw1:charge:m0:24", "gw1:charge:m1:25"]
    assert [e["origin"] for e in listed] == ["gateway", "gateway", "headend", "gateway",
                                             "gateway"]
    assert [e["seq"] for e in store.ledger(limit=2)] == [4, 5]  # the newest, oldest first
    assert [e["id"] for e in store.ledger(account="A0", since_seq=1)] == [
        "pay-1", "gw1:charge:m0:24"]
    # The outbox refers to seq ranges: each batch one reference, rendered from its table.
    refs = [json.loads(p)["ref"] for _, kind, p in store.pending(limit=10) if kind == "ledger"]
    assert refs == [[1, 2], [3, 3], [4, 5]]
    assert [e["id"] for e in store.ledger_range(1, 5)] == [e["id"] for e in listed]
    # `sync` from a seq on: the rest of every table, in order.
    _ack_all(store)
    assert store.requeue_ledger(2) == 3
    assert [json.loads(p)["ref"] for _, _, p in store.pending(limit=10)] == [[3, 5]]
    assert store.requeue_ledger(0, account="A1") == 2
    assert store.ledger_top_seq() == 5 and store.ledger_rows() == 5
    assert {e["id"] for e in store.ledger_entries_by_id(["pay-1", "gw1:charge:m1:25"])} == {
        "pay-1", "gw1:charge:m1:25"}
    assert store.ledger_sum("A0") == Decimal("9.50")
    _exact(store)


def test_an_outside_id_twice_is_a_no_op_and_seqs_stay_one_sequence(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.append_ledger_entries([_topup(1, 0)], origin="headend")
    store.append_ledger_entries([_charge(0, 1)])
    added = store.append_ledger_entries([_topup(2, 2), _topup(1, 0)], origin="headend")
    assert [a["id"] for a in added] == ["pay-2"]
    assert [e["seq"] for e in store.ledger()] == [1, 2, 3]
    assert store.balance("A0") == Decimal("19.75")
    _exact(store)


def test_a_folded_day_is_dropped_and_balances_stay_exact(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=5)
    store.append_ledger_entries([_topup(1, 30)], origin="headend")
    now = T0 + timedelta(days=5)
    # Nothing acknowledged: nothing folds, and retention says what held it.
    pruned = store.apply_retention(POLICY, now)
    assert "ledger" in pruned.held and len(_tables(store)) == 5
    _ack_all(store)
    for _ in range(10):
        store.apply_retention(POLICY, now)
    # Days 0-2 end before the detail window (2 days): folded; days 3 and 4 stay entry by entry.
    assert _tables(store) == {ledger_day_table(DAY0 + 3), ledger_day_table(DAY0 + 4)}
    carries = store.conn.execute("SELECT id, amount, detail FROM ledger WHERE origin='carry' "
                                 "ORDER BY id").fetchall()
    assert [tuple(c) for c in carries] == [
        ("carry:A0:2026-03:charge", "-18.0000", '{"carried":true,"entries":72}'),
        ("carry:A0:2026-03:topup", "10.0000", '{"carried":true,"entries":1}'),
        ("carry:A1:2026-03:charge", "-18.0000", '{"carried":true,"entries":72}')]
    _exact(store)
    assert store.balance("A1") == Decimal("-30.00")
    # The carried entries keep the seq of the last entry they sum up: the order holds, the
    # highest seq is never given again, and a carried entry is never sent.
    top = store.ledger_top_seq()
    store.append_ledger_entries([_charge(0, 5 * 24)])
    assert store.ledger_top_seq() == top + 1
    sent = store.ledger_range(1, top + 1)
    assert len(sent) == 2 * 2 * 24 + 1 and not any(e["id"].startswith("carry:") for e in sent)


def test_a_late_entry_for_a_folded_day_folds_into_its_month(tmp_path: Path) -> None:
    """The clock set back (or a late charge): the day's table is made again, then folded
    again into the same carried-forward entry."""
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=4, meters=1)
    _ack_all(store)
    now = T0 + timedelta(days=4)
    for _ in range(5):
        store.apply_retention(POLICY, now)
    assert ledger_day_table(DAY0) not in _tables(store)
    store.append_ledger_entries([LedgerEntry("gw1:late:1", "A0", "charge", Decimal("-1.00"),
                                             T0 + timedelta(hours=3), "m0")])
    assert ledger_day_table(DAY0) in _tables(store)
    _ack_all(store)
    for _ in range(5):
        store.apply_retention(POLICY, now)
    assert ledger_day_table(DAY0) not in _tables(store)
    row = store.conn.execute("SELECT amount, detail FROM ledger WHERE id="
                             "'carry:A0:2026-03:charge'").fetchone()
    assert tuple(row) == ("-13.0000", '{"carried":true,"entries":49}')
    _exact(store)


def test_charges_of_a_day_read_its_tables(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=3, meters=1)
    day1 = T0 + timedelta(days=1)
    # (energy charges are stamped at the end of their interval: hours 25..48 of day 1)
    assert store.charges_of_day("A0", day1, day1 + timedelta(days=1)) == Decimal("6.00")


def test_schema_8_entries_in_ledger_fold_beside_the_day_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.db"
    with monkeypatch.context() as patch:  # a database as schema 8 made and filled it: the
        patch.setattr(database_module, "SCHEMA_VERSION", 8)  # gateway's entries in `ledger`
        old = Store(path)
        with old.transaction():
            old.ensure_account("A0")
            for hour in range(48):
                old.conn.execute(
                    "INSERT INTO ledger (id, account, kind, amount, amount_micro, ts, meter, "
                    "detail, balance_after, origin) VALUES (?, 'A0', 'charge', '-0.25', "
                    "-250000, ?, 'm0', NULL, ?, 'gateway')",
                    (f"gw1:charge:m0:{hour}", (T0 + timedelta(hours=hour)).isoformat(),
                     f"{-0.25 * (hour + 1):.2f}"))
            old.conn.execute("UPDATE accounts SET balance_micro=-12000000 WHERE id='A0'")
            old.enqueue_range("ledger", 1, 48)
        old.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
    # New entries go on from the highest seq, into their day's table.
    store.append_ledger_entries([_charge(0, 48 + h) for h in range(48)])
    assert [e["seq"] for e in store.ledger(limit=3)] == [94, 95, 96]
    assert _tables(store) == {ledger_day_table(DAY0 + 2), ledger_day_table(DAY0 + 3)}
    _ack_all(store)
    for _ in range(10):
        store.apply_retention(POLICY, T0 + timedelta(days=6))
    # Everything folded: the old entries (deleted from `ledger`) and the two day tables
    # (dropped) into one carried-forward entry, at the highest seq.
    assert _tables(store) == set()
    rows = store.conn.execute("SELECT seq, id, amount FROM ledger").fetchall()
    assert [tuple(r) for r in rows] == [(96, "carry:A0:2026-03:charge", "-24.0000")]
    assert store.ledger_sum("A0") == store.balance("A0") == Decimal("-24.0000")


def test_a_reader_sees_one_snapshot_while_retention_drops_a_table(tmp_path: Path) -> None:
    """The link thread rendering a message, or the CLI listing the ledger, lists the day
    tables and then reads each: retention (the writer) dropping one in between must not make
    that a "no such table" error."""
    writer = Store(tmp_path / "agent.db")
    _days_of_charges(writer, days=4, meters=1)
    _ack_all(writer)
    reader = Store(tmp_path / "agent.db")  # another connection, as another thread has
    with reader.snapshot():
        rows = reader.ledger_rows()
        tables = reader.ledger_tables()
        for _ in range(5):
            writer.apply_retention(POLICY, T0 + timedelta(days=4))
        assert ledger_day_table(DAY0) not in writer.ledger_tables()
        assert reader.ledger_tables() == tables and reader.ledger_rows() == rows
        assert reader.ledger_sum("A0") == Decimal("-24.00")
    assert reader.ledger_rows() == writer.ledger_rows() < rows
    assert reader.ledger_sum("A0") == writer.balance("A0") == Decimal("-24.00")


def test_a_listing_of_no_entries_is_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=1, meters=1)
    assert store.ledger(limit=0) == [] and len(store.ledger(limit=30)) == 24


def test_a_day_table_gives_back_the_text_ledger_keeps(tmp_path: Path) -> None:
    """A day table stores times and money as integers and gives them back as generated text:
    exactly what `ledger` stores for the same entry (to_iso, format_money)."""
    import random

    from edge_agent.prepaid.money import format_money
    from edge_agent.store.database import to_iso

    rng = random.Random(5)
    store = Store(tmp_path / "agent.db")
    outside = Store(tmp_path / "outside.db")  # the same entries as outside ones: `ledger`
    amounts = [Decimal(0), Decimal("-0.000001"), Decimal("0.000001"), Decimal("-1"),
               Decimal("123456789.123456"), Decimal("-0.14"), Decimal("0.10005")]
    amounts += [Decimal(rng.randint(-10**12, 10**12)).scaleb(-6) for _ in range(300)]
    entries = []
    for n, amount in enumerate(amounts):
        ts = T0 + timedelta(seconds=rng.randint(0, 86400 * 3),
                            microseconds=rng.choice([0, 1, 999999, rng.randint(0, 999999)]))
        entries.append(LedgerEntry(f"gw1:x:{n}", f"A{n % 3}", "charge", amount, ts, "m0"))
    store.append_ledger_entries(entries)
    outside.append_ledger_entries(entries, origin="headend")
    assert len(_tables(store)) >= 3 and not _tables(outside)
    got, want = store.ledger(limit=10**6), outside.ledger(limit=10**6)
    assert [(e["id"], e["amount"], e["ts"], e["balance_after"]) for e in got] == [
        (e["id"], e["amount"], e["ts"], e["balance_after"]) for e in want]
    assert [e["amount"] for e in got] == [format_money(a) for a in amounts]
    assert [e["ts"] for e in got] == [to_iso(e.ts) for e in entries]
    assert store.ledger_range(1, len(amounts)) == outside.ledger_range(1, len(amounts))


def test_a_fold_is_counted_and_a_late_entry_holds_back_only_its_day(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=5, meters=1)
    _ack_all(store)
    # A late charge for day 0, not acknowledged yet: day 0 waits, days 1 and 2 fold.
    store.append_ledger_entries([LedgerEntry("gw1:late:0", "A0", "charge", Decimal("-1"),
                                             T0 + timedelta(hours=2), "m0")])
    now = T0 + timedelta(days=5)
    passes = [store.apply_retention(POLICY, now) for _ in range(4)]
    assert [p.ledger_folded for p in passes] == [24, 24, 0, 0] and passes[0]
    assert "ledger" in passes[2].held
    assert _tables(store) == {ledger_day_table(d) for d in (DAY0, DAY0 + 3, DAY0 + 4)}
    _ack_all(store)
    assert store.apply_retention(POLICY, now).ledger_folded == 25
    assert ledger_day_table(DAY0) not in _tables(store)
    _exact(store)


def test_carried_entries_are_never_sent_by_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    _days_of_charges(store, days=4, meters=1)
    _ack_all(store)
    for _ in range(3):
        store.apply_retention(POLICY, T0 + timedelta(days=4))
    carry = "carry:A0:2026-03:charge"
    assert carry in {e["id"] for e in store.ledger(limit=10**6)}
    assert store.requeue_ledger(0, account="A0") == 48  # the entries still in detail
    assert store.requeue_ledger_ids([carry]) == 0
    sent = [e["id"] for _, _, payload in store.pending(limit=100)
            for e in store.ledger_entries_by_id(json.loads(payload).get("ids", []))]
    assert len(sent) == 48 and carry not in sent


def test_an_entry_stamped_before_1970_stays_in_ledger(tmp_path: Path) -> None:
    """A gateway whose clock went wrong: the entry keeps its exact time text."""
    store = Store(tmp_path / "agent.db")
    ts = datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)
    store.append_ledger_entries([LedgerEntry("gw1:old:1", "A0", "charge", Decimal("-1"), ts,
                                             "m0"), _charge(0, 1)])
    assert [r[0] for r in store.conn.execute("SELECT id FROM ledger")] == ["gw1:old:1"]
    assert [(e["id"], e["ts"]) for e in store.ledger()] == [
        ("gw1:old:1", "1969-12-31T23:59:58.500000+00:00"),
        ("gw1:charge:m0:1", "2026-03-01T01:00:00+00:00")]
    _exact(store)


def _stored_ids(store: Store) -> list[tuple[int | None, str | None]]:
    return [row for table in sorted(_tables(store))
            for row in map(tuple, store.conn.execute(f"SELECT n, xid FROM {table} ORDER BY seq"))]


def test_the_gateway_ids_are_stored_as_their_number_and_read_back_whole(
        tmp_path: Path) -> None:
    """Schema 10: an id `<gateway>:<kind>:<meter>:<n>` is stored as n (its text is generated
    from the table's gateway prefix, kind and meter); any other id is stored whole.  Every id
    reads back exactly as given, in listings, ranges, lookups by id and the fold."""
    store = Store(tmp_path / "agent.db")
    odd = [  # (id, meter): ids that must be kept whole
        ("gw1:daily:m0:2026-03-01", "m0"),        # a daily charge: not the kind, not a number
        ("gw1:charge:m0:007", "m0"),              # leading zeros: n would read back as 7
        ("gw1:charge:m1:5", "m0"),                # another meter's id
        ("gw2:charge:m0:8", "m0"),                # the gateway renamed during the day
        ("gw1:charge:m0:", "m0"), ("gw1:charge:m0:-3", "m0"), ("plain", "m0"),
        ("gw1:charge:m0:1234567890123456789", "m0"),  # too long for a number
        ("gw1:charge:None:9", None),               # no meter
    ]
    entries = [LedgerEntry("gw1:daily:m0:2026-02-28", "A0", "charge", Decimal("-1"), T0, "m0"),
               LedgerEntry("gw1:charge:m0:1", "A0", "charge", Decimal("-0.25"), T0, "m0")]
    entries += [LedgerEntry(i, "A0", "charge", Decimal("-0.25"), T0 + timedelta(minutes=n + 1),
                            meter) for n, (i, meter) in enumerate(odd)]
    entries.append(LedgerEntry("gw1:charge:m0:2", "A0", "charge", Decimal("-0.25"),
                               T0 + timedelta(hours=1), "m0"))
    store.append_ledger_entries(entries)
    # (the first entry of the day is a daily charge: the prefix is taken from the next)
    assert _stored_ids(store) == [(None, "gw1:daily:m0:2026-02-28"), (1, None)] + [
        (None, i) for i, _ in odd] + [(2, None)]
    want = [e.id for e in entries]
    assert [e["id"] for e in store.ledger(limit=100)] == want
    assert [e["id"] for e in store.ledger_range(1, len(entries))] == want
    # A gateway id with quotes and colons: the prefix is written into the table's SQL.
    quoted = Store(tmp_path / "quoted.db")
    tricky = [LedgerEntry(f"g'w:1' || 'x:charge:m0:{n}", "A0", "charge", Decimal("-1"),
                          T0 + timedelta(minutes=n), "m0") for n in range(1, 4)]
    quoted.append_ledger_entries(tricky[:2])
    quoted.append_ledger_entries(tricky[2:])  # into the existing table: its prefix read back
    assert _stored_ids(quoted) == [(1, None), (2, None), (3, None)]
    assert [e["id"] for e in quoted.ledger(limit=10)] == [e.id for e in tricky]
    _ack_all(store)
    store.apply_retention(POLICY, T0 + timedelta(days=5))
    assert not _tables(store)
    _exact(store)


def test_a_day_table_of_schema_9_is_written_and_folded_as_before(tmp_path: Path) -> None:
    """A table made before the upgrade (ids stored whole) takes the rest of its day's entries
    in its own layout and folds like the others."""
    from edge_agent.store.ledger import _DAY_TABLE_COLUMNS_V9

    store = Store(tmp_path / "agent.db")
    store.conn.execute(f"CREATE TABLE {ledger_day_table(DAY0)} ({_DAY_TABLE_COLUMNS_V9})")
    _days_of_charges(store, 2)
    assert store.conn.execute(f"SELECT COUNT(*) FROM {ledger_day_table(DAY0)} WHERE "
                              "id LIKE 'gw1:charge:m_:%'").fetchone()[0] == 48
    assert [tuple(r) for r in store.conn.execute(
        f"SELECT n, xid FROM {ledger_day_table(DAY0 + 1)} ORDER BY seq")] == [
            (h, None) for h in range(24, 48) for _ in range(2)]
    listed = store.ledger(limit=1000)
    assert [e["id"] for e in listed] == [f"gw1:charge:m{m}:{h}" for h in range(48)
                                         for m in range(2)]
    _ack_all(store)
    for _ in range(2):  # one day table a pass
        store.apply_retention(POLICY, T0 + timedelta(days=6))
    assert not _tables(store)
    _exact(store)


def test_lookups_by_id_find_every_form_and_nothing_else(tmp_path: Path) -> None:
    """A lookup by id (sync by ids, a queued {"ids": [...]}, the frozen-data correction)
    narrows a schema-10 table on its stored columns first: it must still find every id,
    whatever its form, and only those asked for."""
    store = Store(tmp_path / "agent.db")
    forms = [  # (id, meter), day by day: each day's first batch sets its table's prefix
        [("gw1:charge:a:b:1", "a:b"), ("gw1:charge:a:b:2", "a:b"), ("gw1:charge:m0:3", "m0")],
        [("plain-1", "m0"), ("charge:m0:4", "m0"), ("x:y:charge:m0:5", "m0")],  # prefix ""
        [("x:y:charge:m0:6", "m0"), ("x:y:charge::7", ""), ("gw1:charge:m0:8", "m0"),
         ("gw1:daily:m0:2026-03-03", "m0"), ("gw1:charge:m0:09", "m0")],
    ]
    entries = []
    for day, batch in enumerate(forms):
        part = [LedgerEntry(i, "A0", "charge", Decimal("-1"), T0 + timedelta(days=day, hours=n),
                            meter) for n, (i, meter) in enumerate(batch)]
        store.append_ledger_entries(part[:1])
        store.append_ledger_entries(part[1:])  # the prefix read back from the table
        entries += part
    store.append_ledger_entries([_topup(1, 1)], origin="headend")
    stored = _stored_ids(store)
    assert (1, None) in stored and (4, None) in stored and (7, None) in stored  # compacted
    ids = [e.id for e in entries]
    found = store.ledger_entries_by_id([*ids, "pay-1", "gw1:charge:m0:4", "charge:m0:3",
                                        "gw1:charge:b:1", "nothing", "gw1:charge:m0:9"])
    assert sorted(e["id"] for e in found) == sorted([*ids, "pay-1"])
    for entry_id in ids:
        assert [e["id"] for e in store.ledger_entries_by_id([entry_id])] == [entry_id]
    # Ids of hundreds of colons (a head end's `sync` may name any text): more candidate
    # meters than SQLite binds in one statement by default (32,766; Debian allows more), so
    # no narrowing, and still the right answer.
    many = ["x:" * 400 + f"{n}:1" for n in range(500)]
    assert [e["id"] for e in store.ledger_entries_by_id([*many, "x:y:charge:m0:6"])] == [
        "x:y:charge:m0:6"]
    # A queued {"ids": [...]} holds back the fold of the day it names, not by generated ids
    # of every row but still exactly.
    _ack_all(store)
    assert store.requeue_ledger_ids(["x:y:charge:m0:6"]) == 1
    for _ in range(3):
        store.apply_retention(POLICY, T0 + timedelta(days=9))
    assert _tables(store) == {ledger_day_table(DAY0 + 2)}
    _exact(store)


_KILLED_IN_A_FOLD = """
import os, signal, sys
from datetime import timedelta
sys.path.insert(0, {root!r})
from edge_agent.config import RetentionConfig
from edge_agent.store import Store
from edge_agent.store.retention import Retention
import test_ledger_day_tables as t

calls = []
carry = Retention._carry
def dying(self, group, kept):
    carry(self, group, kept)
    calls.append(group)
    if len(calls) == {after}:  # the table dropped, some carried entries written: no commit
        os.kill(os.getpid(), signal.SIGKILL)
Retention._carry = dying
Store({path!r}).apply_retention(RetentionConfig(ledger_detail_days=2),
                                t.T0 + timedelta(days=5))
"""


@pytest.mark.parametrize("after", [1, 3])
def test_a_kill_in_the_middle_of_a_fold_leaves_the_day_as_it_was(
        tmp_path: Path, after: int) -> None:
    """The fold (sum, DROP TABLE, carried entries) is one transaction: a process killed
    between the drop and the commit leaves the day's table and every balance as they were,
    and the next pass folds it."""
    import subprocess
    import sys

    path = tmp_path / "agent.db"
    store = Store(path)
    _days_of_charges(store, 1, meters=4)
    store.append_ledger_entries([_topup(1, 2)], origin="headend")
    _ack_all(store)
    before = store.ledger(limit=10**6)
    balances = store.balances()
    store.close()
    script = _KILLED_IN_A_FOLD.format(root=str(Path(__file__).resolve().parents[2]),
                                      path=str(path), after=after)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    store = Store(path)
    assert _tables(store) == {ledger_day_table(DAY0)}
    assert store.ledger(limit=10**6) == before and store.balances() == balances
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    _exact(store)
    store.apply_retention(POLICY, T0 + timedelta(days=5))
    assert not _tables(store) and store.balances() == balances
    _exact(store)
