"""SIGKILL the real daemon at random moments during polling and top-ups: the ledger keeps
every entry exactly once and bills every kWh exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal as D

from edge_agent.headend.messages import render
from edge_agent.prepaid.records import LedgerEntry
from edge_agent.store import Store
from firmware_sim.bus import SimBus, make_meters
from tests.helpers import agent_config


def test_sigkill_loses_nothing_and_counts_nothing_twice(tmp_path) -> None:
    rnd = random.Random(645)
    meters = [f"{n:012d}" for n in range(1, 4)]
    sim = SimBus(make_meters(3, load_kw=D("3600"), time_scale=1.0), baud=9600).start()
    config = agent_config(tmp_path, sim.port, meters, poll_interval=0.1,
                          initial_kwh="0.00", policy='alarm_grace_minutes = 0')
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(config)}
    topups: list[LedgerEntry] = []
    try:
        for round_no in range(8):
            proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + rnd.uniform(0.6, 1.6)
            while time.monotonic() < deadline:
                if (tmp_path / "agent.db").exists():
                    # The head end delivers a top-up, and resends an old one.
                    store = Store(tmp_path / "agent.db")
                    entry = LedgerEntry(f"pay-{round_no}-{len(topups)}", "A1", "topup",
                                        D("5.00"), datetime.now(UTC))
                    batch = [entry] + ([rnd.choice(topups)] if topups else [])
                    store.append_ledger_entries(batch, origin="headend")
                    topups.append(entry)
                    store.close()
                time.sleep(rnd.uniform(0.05, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finally:
        sim.stop()
    store = Store(tmp_path / "agent.db")
    ledger = store.ledger(limit=1_000_000)
    ids = [e["id"] for e in ledger]
    assert len(ids) == len(set(ids))
    assert sorted(e["id"] for e in ledger if e["kind"] == "topup") == sorted(
        t.id for t in topups)
    for account in ("A1", "A2", "A3"):
        assert store.balance(account) == store.ledger_sum(account)
    states = store.billing_states()
    for meter in meters:
        charges = [e for e in ledger if e["kind"] == "charge" and e["meter"] == meter]
        seqs = [int(e["id"].rsplit(":", 1)[1]) for e in charges]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
        assert states[meter].charge_seq == len(seqs)
        billed = sum((D(e["detail"]["kwh"]) for e in charges), D(0))
        assert billed == states[meter].last_kwh  # every kWh since 0.00 billed exactly once
        assert billed > 0
    # Every message created was queued for the head end in the same transaction.
    queued = [render(store, kind, p) for _, kind, p in store.pending(limit=1_000_000)
              if kind == "ledger"]
    queued_ids = {e["id"] for batch in queued if batch for e in batch["entries"]}
    gateway_ids = {e["id"] for e in ledger if e["origin"] == "gateway"}
    assert gateway_ids <= queued_ids
