"""`tariff check` with versions and `edge-agent tariffs` (issue 14, point 2)."""

from __future__ import annotations

import json
from datetime import datetime

from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.store import Store
from tests.helpers import TARIFFS

V2 = ('[tariff]\nid = "flat"\neffective_from = 2027-01-01T00:00:00\n'
      '[energy]\ntype = "flat"\nprice = "0.6000"\n')


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_tariff_check_shows_current_and_pending(tmp_path) -> None:
    new = tmp_path / "flat-2027.toml"
    new.write_text(V2)
    code, out, _ = run("tariff", "check", str(TARIFFS / "flat.toml"), str(new),
                       "--at", "2026-12-01T00:00", "--json")
    assert code == 0
    assert [(r["effective_from"], r["status"]) for r in json.loads(out)] == [
        (None, "current"), ("2027-01-01T00:00:00", "pending")]
    code, out, _ = run("tariff", "check", str(TARIFFS / "flat.toml"), str(new),
                       "--at", "2027-02-01T00:00")
    assert "ok (flat tariff flat) superseded" in out
    assert "ok (flat tariff flat) current from 2027-01-01T00:00:00" in out
    twice = tmp_path / "again.toml"
    twice.write_text(V2)
    code, out, _ = run("tariff", "check", str(new), str(twice))
    assert code == 1 and "two versions take effect at 2027-01-01T00:00:00" in out


def test_tariffs_lists_versions_from_the_database(tmp_path) -> None:
    db = tmp_path / "agent.db"
    store = Store(db)
    store.save_tariff("flat", (TARIFFS / "flat.toml").read_text(), datetime.now().astimezone())
    store.save_tariff("flat", V2, datetime.now().astimezone(), "2027-01-01T00:00:00")
    store.close()
    code, out, _ = run("tariffs", "--db", str(db), "--at", "2026-12-01T00:00", "--json")
    assert code == 0
    assert [(r["id"], r["effective_from"], r["status"], r["source"])
            for r in json.loads(out)] == [("flat", None, "current", "head end"),
                                          ("flat", "2027-01-01T00:00:00", "pending", "head end")]
    code, out, _ = run("tariffs", "--db", str(db), "--at", "2027-01-01T00:00")
    assert "superseded" in out and len(out.splitlines()) == 2
