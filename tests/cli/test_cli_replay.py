"""`bill replay` shows what the daemon does (issue 14, point 6)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from tests.helpers import TARIFFS


def replay(tmp: Path, rows: str, *args: str, policy: str = "alarm_grace_minutes = 0\n"
           ) -> list[dict]:
    csv = tmp / "r.csv"
    csv.write_text(rows)
    pol = tmp / "policy.toml"
    pol.write_text("[policy]\n" + policy)
    result = CliRunner().invoke(main, ["bill", "replay", str(csv), "--tariff",
                                       str(TARIFFS / "flat.toml"), "--policy", str(pol),
                                       "--json", *args])
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def relays(lines: list[dict]) -> list[tuple]:
    return [(x["meter"], x["action"], x["ts"][11:16], x["ok"]) for x in lines
            if x["type"] == "relay"]


def events(lines: list[dict], kind: str) -> list[dict]:
    return [x for x in lines if x["type"] == "event" and x["event"] == kind]


def test_rows_with_one_timestamp_are_one_cycle_for_the_guard(tmp_path) -> None:
    rows = "".join(f"2026-11-22T{h},m{n},{kwh}\n" for h, kwh in  # opening 1: owed at 09:00
                   (("08:00", "100.00"), ("09:00", "110.00"), ("09:30", "110.00"))
                   for n in range(1, 5))
    lines = replay(tmp_path, rows, "--opening", "1",
                   policy='alarm_grace_minutes = 0\ntrip_guard_min = 1\nmax_trip_share = "0.1"\n')
    assert [a for _, a, _, _ in relays(lines)] == ["alarm"] * 4  # the 4 trips were held
    [guard] = events(lines, "trip_guard")
    assert guard["detail"]["trips_wanted"] == 4 and guard["detail"]["limit"] == 1


def test_silent_poll_keep_power_relay_failure_and_late_topup(tmp_path) -> None:
    rows = ("2026-11-22T08:00,m1,100.00\n2026-11-22T09:00,m1,110.00\n"
            "2026-11-22T09:30,m1,\n"  # polled, no answer: no decision
            "2026-11-22T10:00,m1,110.00\n2026-11-22T10:30,m1,110.00\n")
    lines = replay(tmp_path, rows, "--relay-fail", "m1=2026-11-22T10:00", "--opening", "1",
                   "--topup", "2026-11-22T12:00=50")
    assert relays(lines) == [("m1", "alarm", "09:00", True), ("m1", "trip", "10:00", False),
                             ("m1", "trip", "10:30", True),
                             ("m1", "close_allowed", "12:00", True)]  # after the last row
    assert len(events(lines, "meter_offline")) == 1 and events(lines, "relay_failed")
    assert lines[-1]["balances"] == {"account-m1": "45.4000"}  # 1 - 5.60 + 50
    kept = replay(tmp_path, rows, "--keep-power", "m1", "--opening", "1")
    assert [a for _, a, _, _ in relays(kept)] == ["alarm"]
    assert events(kept, "cutoff_deferred")[0]["detail"]["reason"] == "keep_power"


def test_arrival_order_as_given(tmp_path) -> None:
    rows = ("2026-11-22T08:00,m1,100.00\n2026-11-22T10:00,m1,120.00\n"
            "2026-11-22T09:00,m1,110.00\n")
    given = replay(tmp_path, rows, "--as-given", "--opening", "100")
    assert events(given, "register_decrease")  # 110 arrived after 120
    assert given[-1]["balances"] == {"account-m1": "88.8000"}  # 20 kWh billed once
    ordered = replay(tmp_path, rows, "--sorted", "--opening", "100")
    assert not events(ordered, "register_decrease")
    assert ordered[-1]["balances"] == {"account-m1": "88.8000"}


def test_days_left_reminder_fires_on_the_replays_clock(tmp_path) -> None:
    # 25 yuan; 10 kWh a day at 0.56 = 5.60 a day.  After day 1: 19.40 left, 3.5 days; after
    # day 2: 13.80 left, 2.5 days <= 3: the reminder.
    rows = ("2026-11-22T08:00,m1,100.00\n2026-11-23T08:00,m1,110.00\n"
            "2026-11-24T08:00,m1,120.00\n")
    lines = replay(tmp_path, rows, "--opening", "25",
                   policy='alert_levels = []\nalert_days_left = "3"\n')
    [alert] = events(lines, "low_balance")
    assert alert["ts"].startswith("2026-11-24T08:00") and alert["detail"]["days_left"] == "2.5"


def test_topup_needs_a_meter_with_several_and_classes_come_from_the_policy(tmp_path) -> None:
    rows = "2026-11-22T08:00,m1,1.00\n2026-11-22T08:00,m2,1.00\n"
    csv = tmp_path / "r.csv"
    csv.write_text(rows)
    result = CliRunner().invoke(main, ["bill", "replay", str(csv), "--tariff",
                                       str(TARIFFS / "flat.toml"), "--topup",
                                       "2026-11-22T09:00=5"])
    assert result.exit_code == 2 and "TIMESTAMP=AMOUNT@METER" in result.stderr
    lines = replay(tmp_path, rows, "--topup", "2026-11-22T09:00=5@m2")
    assert lines[-1]["balances"] == {"account-m1": "0.0000", "account-m2": "5.0000"}
    result = CliRunner().invoke(main, ["bill", "replay", str(csv), "--tariff",
                                       str(TARIFFS / "flat.toml"), "--class", "m1=vip"])
    assert result.exit_code == 2 and "no class 'vip'" in result.stderr
    lines = replay(tmp_path, "2026-11-22T08:00,m1,100.00\n2026-11-22T09:00,m1,110.00\n"
                   "2026-11-22T10:00,m1,110.00\n", "--class", "m1=hospital", "--opening", "1",
                   policy="alarm_grace_minutes = 0\n[policy.classes.hospital]\n"
                   "trips_need_force = true\n")
    assert [a for _, a, _, _ in relays(lines)] == ["alarm"]
    assert events(lines, "cutoff_deferred")[0]["detail"]["reason"] == "force_required"


def test_startup_and_offline_holds_in_replay(tmp_path) -> None:
    rows = ("2026-11-22T08:00,m1,100.00\n2026-11-22T09:00,m1,110.00\n"
            "2026-11-22T09:05,m1,110.00\n2026-11-22T09:20,m1,110.00\n")
    lines = replay(tmp_path, rows, "--opening", "1", "--boot", "2026-11-22T09:00",
                   policy="alarm_grace_minutes = 0\nstartup_keep_power_minutes = 15\n")
    assert relays(lines) == [("m1", "alarm", "09:00", True), ("m1", "trip", "09:20", True)]
    assert [x["event"] for x in lines if x["type"] == "event" and
            x["event"].startswith("enforcement_")] == ["enforcement_suspended",
                                                        "enforcement_resumed"]
    lines = replay(tmp_path, rows, "--opening", "1", "--headend-seen", "2026-11-21T08:00",
                   policy="alarm_grace_minutes = 0\noffline_enforcement_hours = 24\n")
    assert [a for _, a, _, _ in relays(lines)] == ["alarm"]
    assert events(lines, "cutoff_deferred")[0]["detail"]["reason"] == "headend_unreachable"


def test_replay_with_a_pending_tariff_version(tmp_path) -> None:
    # 0.56 until 2026-11-22 10:00, then 0.60: 10 kWh 09:30-10:30 split 5 / 5 at the switch:
    # 2.80 + 3.00 = 5.80.
    new = tmp_path / "flat-new.toml"
    new.write_text('[tariff]\nid = "flat"\neffective_from = 2026-11-22T10:00:00\n'
                   '[energy]\ntype = "flat"\nprice = "0.6000"\n')
    lines = replay(tmp_path, "2026-11-22T09:30,m1,100.00\n2026-11-22T10:30,m1,110.00\n",
                   "--tariff", str(new), "--opening", "10", policy="")
    assert lines[-1]["balances"] == {"account-m1": "4.2000"}
    csv = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["bill", "replay", str(csv), "--tariff",
                                       str(TARIFFS / "flat.toml"), "--tariff",
                                       str(TARIFFS / "winter-tiered.toml")])
    assert result.exit_code == 2 and "versions of one tariff" in result.stderr
