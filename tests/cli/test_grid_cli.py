"""`edge-agent lineloss`, `usage ACCOUNT` and `map` over a real database and configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.grid.lineloss import line_loss
from edge_agent.store import MeterRecord, Store

T0, T1 = datetime(2026, 4, 1, 16, tzinfo=UTC), datetime(2026, 4, 2, 16, tzinfo=UTC)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def database(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    store = Store(path)
    with store.transaction():
        store.save_line_loss(line_loss("000000000099", "day", T0, T1, D("100"),
                                       {"a": D("60"), "b": D("30")}, D("0.08")))
        store.save_line_loss(line_loss("000000000099", "day", T1, T1, D("100"),
                                       {"a": D("60"), "b": None}, D("0.08")))
        store.save_usage("acct", datetime(2026, 4, 2).date(), {
            "account": "acct", "meter": "000000000001", "day": "2026-04-02", "kwh": "24.00",
            "rates": {"sharp": "0", "peak": "6", "flat": "12", "valley": "6"},
            "cost": "12.0000", "tier": {"block": 1, "block_remaining": "26.00"}})
    store.add_meter(MeterRecord("000000000001", "b1", "acct", "flat"))
    store.close()
    return path


def test_lineloss_human_and_json(tmp_path: Path) -> None:
    db = str(database(tmp_path))
    code, out, err = run("lineloss", "--db", db)
    assert code == 0, err
    assert "10.00%" in out and "over_threshold" in out and "incomplete" in out
    code, out, _ = run("lineloss", "--db", db, "--json")
    complete, partial = sorted(json.loads(out), key=lambda r: r["start"])
    assert complete["rate"] == "0.1000" and partial["missing"] == 1 and partial["rate"] is None


def test_usage(tmp_path: Path) -> None:
    db = str(database(tmp_path))
    code, out, _ = run("usage", "acct", "--db", db)
    assert code == 0 and "block 1, 26.00 kWh left" in out
    code, out, _ = run("usage", "acct", "--db", db, "--json")
    assert json.loads(out)[0]["kwh"] == "24.00"


def test_map_geojson(tmp_path: Path) -> None:
    db = database(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
database = "{db}"
[[bus]]
name = "b1"
port = "/dev/null"
[[meter]]
address = "000000000099"
bus = "b1"
role = "total"
ct_ratio = 40
lat = 30.25
lon = 120.16
[[meter]]
address = "000000000001"
bus = "b1"
account = "acct"
tariff = "flat"
behind = "000000000099"
lat = 30.2501
lon = 120.1602
pole = "P-17"
phase = "B"
customer_class = "residential"
""")
    code, out, err = run("--config", str(config), "map")
    assert code == 0, err
    data = json.loads(out)
    by = {f["properties"]["meter"]: f for f in data["features"]}
    assert by["000000000001"]["geometry"]["coordinates"] == [120.1602, 30.2501]
    assert by["000000000001"]["properties"]["pole"] == "P-17"
    assert by["000000000099"]["properties"]["role"] == "total"
