"""Default tables fit an 80-column terminal: local time to the minute, 2 decimals; `--wide`
shows exact values (issue 12)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.prepaid.records import LedgerEntry
from tests.helpers import at, energy_poll, processor


@pytest.fixture
def db(tmp_path: Path) -> Path:
    proc = processor(tmp_path / "agent.db", meters=3, tariff="residential-tou")
    start = at("2026-11-22 08:00")
    for n in range(1, 6):
        polls = [energy_poll(f"{m:012d}", start + timedelta(hours=n),
                             f"{100 + n * 1.37 * m:.2f}") for m in range(1, 4)]
        proc.process(polls, start + timedelta(hours=n))
    proc.apply_entries([LedgerEntry("topup-1", "A2", "topup", __import__("decimal").Decimal(
        "123.4567"), start, None, {"note": "a long note " * 5})], start, "headend")
    proc.store.close()
    return tmp_path / "agent.db"


VERBS = [["meters"], ["status"], ["balance"], ["ledger"], ["events"], ["outbox"]]


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_default_output_fits_80_columns(db: Path, verb: list[str]) -> None:
    result = CliRunner().invoke(main, [*verb, "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert "+00:00" not in result.stdout and ".000000" not in result.stdout


def test_wide_shows_exact_amounts_and_ledger_ids(db: Path) -> None:
    narrow = CliRunner().invoke(main, ["ledger", "--db", str(db)]).stdout
    wide = CliRunner().invoke(main, ["ledger", "--wide", "--db", str(db)]).stdout
    assert "123.46" in narrow and "123.4567" not in narrow and "topup-1" not in narrow
    assert "123.4567" in wide and "topup-1" in wide
    assert any(len(line) > 80 for line in wide.splitlines())
