"""`edge-agent demo` end to end, non-interactive, with a broker and in offline mode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize("mode", ["mqtt", "offline"])
def test_demo_summary(mode: str) -> None:
    if mode == "mqtt" and shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed; .ci/run installs it")
    args = [sys.executable, "-m", "edge_agent", "demo", "--json"]
    if mode == "offline":
        args.append("--offline")
    done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["mode"] == mode
    assert summary["cutoff_and_restore"] is True
    assert summary["events"] == {"low_balance": 1, "credit_exhausted": 1, "relay_tripped": 1,
                                 "relay_closed": 1}
    assert summary["readings"] > 0 and summary["ledger_entries"] > 0
    assert "[5] credit exhausted" in done.stderr  # progress went to stderr
    area = summary["concentrator"]  # issue 13: backfill after an outage, theft on the line
    assert area["backfill_charges"] == 6 and area["line_loss_high"] == 1
    assert float(area["theft_rate"]) > 0.08 > float(area["normal_rate"])
    if mode == "mqtt":
        head = summary["head_end"]
        assert head["readings_received"] == summary["readings"]
        assert head["ledger_entries_received"] == summary["ledger_entries"]
        assert head["seq"]["gaps"] == []
