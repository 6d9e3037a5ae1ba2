"""`status` lists problem meters first with their location (issue 13, point 5): 80 columns by
default, everything with `--wide`, the same in `--json`; `meters --geojson` flags the same
meters by the same rule (`store.meter_problems`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.store import MeterRecord, Store

T0 = datetime(2026, 4, 1, tzinfo=UTC)
POLE = "P-17-NORTH-SIDE-OF-THE-RIVER"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.exit_code, result.stdout


def database(tmp_path: Path) -> str:
    path = tmp_path / "agent.db"
    store = Store(path)
    for n in range(1, 6):
        store.add_meter(MeterRecord(f"{n:012d}", "rs485-1", f"ACC-{n:04d}", "flat"),
                        Decimal("100"), T0)
    with store.transaction():
        store.set_relay("000000000001", "closed")
        store.set_relay("000000000002", "open")  # tripped
        store.record_poll([("000000000004", False, T0)])  # unanswered: offline
        store.save_clock("000000000005", T0, datetime(2026, 4, 1, 0, 2), 120.0, True)
        store.save_raised({"000000000004": ["read_failures", "register_stopped"],
                           "000000000099": ["line_loss_high"]})  # a total meter's area
        store.set_meter_location("000000000004", {
            "lat": 30.274312345, "lon": 120.155612345, "pole": POLE, "phase": "B",
            "customer_class": "residential"}, "headend", T0)
        store.set_meter_location("000000000002", {"pole": "P-2", "phase": "A"}, "headend", T0)
        store.set_meter_location("000000000003", {"lat": 30.1, "lon": 120.1}, "headend", T0)
        # a meter removed since: its location and clock are kept, it is no problem and no pin
        store.add_meter(MeterRecord("000000000007", "rs485-1", "ACC-7", "flat"))
        store.set_meter_location("000000000007", {"lat": 30.3, "lon": 120.3}, "headend", T0)
        store.save_clock("000000000007", T0, datetime(2026, 4, 1, 0, 9), 540.0, True)
        store.remove_meter("000000000007")
    store.close()
    return str(path)


PROBLEMS = {"000000000002": ["relay_open"],
            "000000000004": ["offline", "read_failures", "register_stopped"],
            "000000000005": ["clock_deviation"], "000000000099": ["line_loss_high"]}


def test_status_lists_problem_meters_first_with_their_location(tmp_path: Path) -> None:
    db = database(tmp_path)
    _, out = run("status", "--db", db)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    start = lines.index("4 meter(s) with a problem:")
    problem_lines = lines[start + 2:start + 6]
    assert [line.split()[0] for line in problem_lines] == sorted(PROBLEMS)
    four = problem_lines[1]
    assert "P-17-NORT~" in four and " B " in four and "30.27431,120.15561" in four
    assert "offline" in four
    # the meter table: problem meters first (marked), then the others
    table = lines[lines.index(next(x for x in lines if x.startswith("!  METER"))) + 1:]
    assert [(row[:1], row[3:15]) for row in table] == [
        ("!", "000000000002"), ("!", "000000000004"), ("!", "000000000005"),
        (" ", "000000000001"), (" ", "000000000003")]


def test_wide_shows_everything_and_json_the_same(tmp_path: Path) -> None:
    db = database(tmp_path)
    _, wide = run("status", "--db", db, "--wide")
    assert POLE in wide and "30.274312345,120.155612345" in wide and "residential" in wide
    assert "offline,read_failures,register_stopped" in wide
    _, out = run("status", "--db", db, "--json")
    data = json.loads(out)
    assert {p["meter"]: p["problems"] for p in data["problems"]} == PROBLEMS
    assert [(m["meter"], m["problem"]) for m in data["meters"]] == [
        ("000000000002", True), ("000000000004", True), ("000000000005", True),
        ("000000000001", False), ("000000000003", False)]
    four = next(m for m in data["meters"] if m["meter"] == "000000000004")
    assert four["location"] == {"lat": 30.274312345, "lon": 120.155612345, "pole": POLE,
                                "phase": "B", "customer_class": "residential",
                                "source": "headend"}
    assert four["problems"] == PROBLEMS["000000000004"]
    one = next(m for m in data["meters"] if m["meter"] == "000000000001")
    assert one["location"] is None and one["problems"] == []


def test_geojson_flags_the_same_meters(tmp_path: Path) -> None:
    db = database(tmp_path)
    _, out = run("meters", "--geojson", "--db", db)
    features = {f["properties"]["meter"]: f for f in json.loads(out)["features"]}
    assert sorted(features) == ["000000000003", "000000000004"]  # those with coordinates
    four = features["000000000004"]["properties"]
    assert four["problem"] is True and four["problems"] == PROBLEMS["000000000004"]
    assert four["pole"] == POLE and four["source"] == "headend"
    assert features["000000000003"]["properties"]["problem"] is False
    assert features["000000000004"]["geometry"]["coordinates"] == [120.155612345, 30.274312345]
    _, same = run("map", "--db", db)
    assert json.loads(same) == json.loads(out)
    _, listed = run("meters", "--db", db, "--json")
    assert {m["meter"]: m["problems"] for m in json.loads(listed) if m["problems"]} == {
        m: p for m, p in PROBLEMS.items() if m != "000000000099"}


def test_no_problem_no_problem_table(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    store = Store(path)
    store.add_meter(MeterRecord("000000000001", "rs485-1", "A1", "flat"), Decimal("1"), T0)
    store.close()
    _, out = run("status", "--db", str(path))
    assert "with a problem" not in out
