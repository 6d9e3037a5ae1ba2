"""CLI verbs of the prepaid core: tariff check, bill replay, config check, state verbs."""

from __future__ import annotations

import json
from decimal import Decimal as D

from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.prepaid.records import LedgerEntry
from tests.helpers import REPO, TARIFFS, agent_config, at, energy_poll, processor


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_tariff_check_ok_and_errors(tmp_path) -> None:
    code, out, _ = run("tariff", "check", str(TARIFFS / "winter-tiered.toml"))
    assert code == 0 and "ok (tiered tariff winter-tiered)" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[tariff]\nid="b"\n[energy]\ntype="flat"\nprice="-1"\nextra=1\n')
    code, out, err = run("tariff", "check", str(bad), "--json")
    assert code == 1 and err.startswith("error: 2 error(s) in 1 file(s)")
    [result] = json.loads(out)
    assert f"{bad}: [energy].price: price '-1' is negative" in result["errors"]
    assert any("unknown key 'extra'" in e for e in result["errors"])


def test_bill_replay_timeline(tmp_path) -> None:
    csv = tmp_path / "readings.csv"
    csv.write_text("timestamp,meter,kwh\n"
                   "2026-11-22T08:00,000000000001,100.00\n"
                   "2026-11-22T09:00,000000000001,110.00\n"
                   "2026-11-22T10:00,000000000001,130.00\n"
                   "2026-11-22T11:00,000000000001,131.00\n")
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\nalert_levels = ["5"]\nalarm_grace_minutes = 30\n')
    code, out, err = run("bill", "replay", str(csv), "--tariff", str(TARIFFS / "flat.toml"),
                         "--policy", str(policy), "--opening", "10",
                         "--topup", "2026-11-22T10:30=20", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    ledger = [x for x in lines if x["type"] == "ledger"]
    assert [x["amount"] for x in ledger] == ["10.0000", "-5.6000", "-11.2000", "20.0000",
                                             "-0.5600"]
    assert ledger[2]["balance_after"] == "-6.8000"
    relay = [(x["action"], x["ts"][11:16]) for x in lines if x["type"] == "relay"]
    # credit exhausted at 10:00 (alarm); the top-up at 10:30 releases the alarm
    assert relay == [("alarm", "10:00"), ("alarm_release", "10:30")]
    assert lines[-1] == {"type": "summary", "balances": {"account-000000000001": "12.6400"}}
    code, out, _ = run("bill", "replay", str(csv), "--tariff", str(TARIFFS / "flat.toml"))
    assert code == 0 and "final balances: account-000000000001 -17.3600" in out  # 31 x 0.56
    assert "2026-11-22T08:00:00  EVENT low_balance" in out  # local time throughout


def test_bill_replay_rejects_bad_csv(tmp_path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("2026-11-22T08:00,000000000001,1.005\n")
    code, _, err = run("bill", "replay", str(csv), "--tariff", str(TARIFFS / "flat.toml"))
    assert code == 2 and f"{csv}:1: kwh '1.005' has more than 2 decimals" in err


def test_config_check_names_each_mistake(tmp_path) -> None:
    path = agent_config(tmp_path, "/dev/null", ["000000000001"])
    code, out, _ = run("--config", str(path), "config", "check")
    assert code == 0 and "ok (1 bus(es), 1 meter(s)" in out
    text = path.read_text().replace("baud = 9600", "baud = 2401").replace(
        'gateway_id = "gw1"', 'gateway_id = "gw1"\ncolour = "red"').replace(
        "[policy]", "[policy]\nalarm_grace_minutes = -5")
    text += '\n[[meter]]\naddress = "12345"\nbus = "bus9"\naccount = "X"\ntariff = "flat"\n'
    path.write_text(text)
    code, out, err = run("--config", str(path), "config", "check")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "problem(s) in the configuration" in err
    err = out  # config check lists each problem on stdout
    assert "[[bus]][0].baud: 2401 is not a standard baud rate" in err
    assert "[agent].colour: unknown key 'colour'" in err
    assert "alarm_grace_minutes: -5 must be a whole number >= 0" in err
    assert "[[meter]][1].bus: no bus named 'bus9'" in err
    assert "[[meter]][1].address: '12345' is not 12 digits" in err
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "baud = 2401" in t)
    assert f"agent.toml:{line}: [[bus]][0].baud" in err


def test_missing_config_is_a_usage_error(tmp_path) -> None:
    code, _, err = run("--config", str(tmp_path / "nope.toml"), "meters")
    assert code == 2 and "configuration file not found" in err


def test_every_error_is_one_stderr_line(tmp_path) -> None:
    path = agent_config(tmp_path, "/dev/null", ["000000000001"])
    path.write_text(path.read_text().replace("baud = 9600", "baud = 2401").replace(
        "gap = 0.0", "gap = 9.0"))
    code, _, err = run("--config", str(path), "meters")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "baud: 2401" in err and "gap: 9.0" in err


def test_state_verbs_read_the_database(tmp_path) -> None:
    p = processor(tmp_path / "agent.db", meters=2)
    p.apply_entries([LedgerEntry("pay-1", "A1", "topup", D("50"), at("2026-11-22 08:00"))],
                    at("2026-11-22 08:00"))
    p.process([energy_poll("000000000001", at("2026-11-22 09:00"), "110.00"),
               energy_poll("000000000002", at("2026-11-22 09:00"), "100.00")],
              at("2026-11-22 09:00"))
    db = str(tmp_path / "agent.db")
    code, out, _ = run("balance", "A1", "--db", db, "--json")
    assert json.loads(out) == {"account": "A1", "balance": "44.4000", "display": "44.40"}
    code, out, _ = run("ledger", "A1", "--db", db, "--json")
    assert [e["kind"] for e in json.loads(out)] == ["topup", "charge"]
    code, out, _ = run("meters", "--db", db, "--json")
    assert {m["meter"]: m["kwh"] for m in json.loads(out)} == {"000000000001": "110.00",
                                                               "000000000002": "100.00"}
    code, out, _ = run("status", "--db", db, "--json")
    status = json.loads(out)
    assert status["buses"][0]["success_rate"] == 1.0 and status["outbox_total"] > 0
    code, out, _ = run("events", "--db", db, "--json", "--type", "low_balance")
    assert {e["account"] for e in json.loads(out)} == {"A2"}
    code, out, _ = run("outbox", "--db", db, "--json")
    assert json.loads(out)["by_kind"]["ledger"] == 2
    code, out, _ = run("meters", "--db", db)
    assert code == 0 and "000000000001" in out and "BALANCE" in out


def test_commission_verbs(tmp_path) -> None:
    p = processor(tmp_path / "agent.db")
    db = str(tmp_path / "agent.db")
    code, _, err = run("commission", "add", "000000000007", "--bus", "bus1", "--account", "A7",
                       "--tariff", "flat", "--initial-kwh", "12.34", "--db", db)
    assert code == 0, err
    code, _, err = run("commission", "add", "000000000007", "--bus", "bus1", "--account", "A7",
                       "--tariff", "flat", "--initial-kwh", "12.34", "--db", db)
    assert code == 1 and "already registered" in err
    code, _, _ = run("commission", "replace", "000000000007", "000000000008",
                     "--old-final-kwh", "20.00", "--new-initial-kwh", "0.00", "--db", db)
    assert code == 0
    code, _, err = run("commission", "remove", "000000000099", "--db", db)
    assert code == 1 and "unknown meter 000000000099" in err
    assert [m.address for m in p.store.meters()] == ["000000000001", "000000000008"]
    assert REPO.exists()


def test_shipped_example_config_is_valid() -> None:
    from edge_agent.config import load_config

    config = load_config(REPO / "config" / "agent.toml")
    assert config.gateway_id == "gw1" and len(config.meters) == 2
    assert config.policy.protected_hours == ((22 * 60, 7 * 60),)
