"""The technician CLI against simulated meters on a real pseudo-terminal."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from click.testing import CliRunner

from edge_agent.cli import main
from firmware_sim.bus import SimBus

LINE = ["--baud", "9600", "--timeout", "0.1"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_read_energy(sim_bus: SimBus) -> None:
    sim_bus.meter("000000000001").add_energy(Decimal("42.37"), rate=3)
    code, out, err = run("read", "-p", sim_bus.port, *LINE, "-a", "000000000001",
                         "energy", "forward_active_rate3", "voltage", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0] == {"meter": "000000000001", "name": "forward_active_total",
                       "di": "00010000", "value": "42.37", "unit": "kWh"}
    assert rows[1]["value"] == "42.37"
    assert rows[2]["unit"] == "V"


def test_read_human_output_and_global_json(sim_bus: SimBus) -> None:
    code, out, _ = run("read", "-p", sim_bus.port, *LINE, "-a", "000000000002", "00010000")
    assert code == 0 and "forward_active_total" in out and "kWh" in out
    code, out, _ = run("--json", "read", "-p", sim_bus.port, *LINE, "-a", "000000000002")
    assert code == 0 and json.loads(out)[0]["name"] == "forward_active_total"


def test_scan_finds_all_eight(sim_bus: SimBus) -> None:
    code, out, err = run("scan", "-p", sim_bus.port, "--baud", "9600", "--timeout", "0.03",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["meters"] == [f"{n:012d}" for n in range(1, 9)]
    assert "probes" in err  # progress on stderr


def test_trip_and_close_confirmed_by_status_word(sim_bus: SimBus) -> None:
    meter = sim_bus.meter("000000000003")
    code, out, err = run("relay", "-p", sim_bus.port, *LINE, "-a", "000000000003", "trip",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["relay"] == "open" and meter.relay_open
    code, out, err = run("relay", "-p", sim_bus.port, *LINE, "-a", "000000000003",
                         "direct_close", "--json")
    assert code == 0, err
    assert json.loads(out)["relay"] == "closed" and not meter.relay_open


def test_silent_meter_exit_1_within_timeout(sim_bus: SimBus) -> None:
    sim_bus.meter("000000000004").fault = "silent"
    started = time.monotonic()
    code, _out, err = run("read", "-p", sim_bus.port, "--baud", "9600", "--timeout", "0.2",
                         "--retries", "1", "-a", "000000000004")
    elapsed = time.monotonic() - started
    assert code == 1
    assert err.startswith("error: no reply on ")
    assert elapsed < 2 * (0.2 + 0.1) + 0.5


def test_abnormal_reply_is_reported(sim_bus: SimBus) -> None:
    sim_bus.meter("000000000005").fault = "abnormal"
    code, _, err = run("read", "-p", sim_bus.port, *LINE, "-a", "000000000005")
    assert code == 1 and "refused read data: other error" in err


def test_keep_power_meter_refuses_trip(sim_bus: SimBus) -> None:
    run("relay", "-p", sim_bus.port, *LINE, "-a", "000000000006", "keep_power")
    code, _, err = run("relay", "-p", sim_bus.port, *LINE, "-a", "000000000006", "trip")
    assert code == 1 and "refused relay control" in err
    assert not sim_bus.meter("000000000006").relay_open


def test_frame_decode_and_encode() -> None:
    code, out, _ = run("frame", "decode", "FE FE 68 01 00 00 00 00 00 68 91 08 33 33 34 33 78 56",
                       "34 33 6C 16", "--json")
    assert code == 0
    fields = json.loads(out)
    assert fields["value"] == "123.45" and fields["unit"] == "kWh"
    assert fields["control"]["direction"] == "slave->master"
    code, out, err = run("frame", "decode", "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B4 16")
    assert code == 1 and err.startswith("error: checksum")
    code, out, _ = run("frame", "encode", "read", "-a", "1", "--di", "energy",
                       "--no-preamble")
    assert out.strip() == "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16"
    code, out, _ = run("frame", "decode", "68 01 00 00 00 00 00 68 D1 01 35 D8 16")
    assert "no requested data" in out


def test_usage_errors_exit_2() -> None:
    code, _, err = run("read", "-a", "000000000001")
    assert code == 2 and err.startswith("error:")
    code, _, err = run("read", "-p", "/dev/null", "-a", "1", "no_such_quantity")
    assert code == 2 and "unknown data identifier" in err


def test_missing_port_exit_1() -> None:
    code, _, err = run("read", "-p", "/dev/does-not-exist", "-a", "000000000001")
    assert code == 1 and "cannot open port /dev/does-not-exist" in err


def test_a_direct_read_shows_status_words_as_the_daemon_does(sim_bus: SimBus) -> None:
    """One format for status words everywhere: 4 hex digits (issue 11), on a port the CLI
    opens itself as well as through the daemon."""
    code, out, err = run("read", "-p", sim_bus.port, *LINE, "-a", "000000000001",
                         "status_word_3", "--json")
    assert code == 0, err
    value = json.loads(out)[0]["value"]
    assert isinstance(value, str) and len(value) == 4 and int(value, 16) >= 0
