"""`frame encode` and `read` edge cases of issue 10: one `error:` line, never a traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from firmware_sim.bus import SimBus


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, (ValueError, OverflowError, KeyError)), \
        result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args", [
    ["read", "--di", "zz"],
    ["read", "--di", "123456789"],  # nine hex digits: not a DI
    ["broadcast-time", "--time", "yesterday"],
    ["freeze", "-a", "000000000001", "--time", "2026-13-40"],
])
def test_bad_di_or_time_is_one_error_line(args: list[str]) -> None:
    code, out, err = run("frame", "encode", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in out + err


def test_relay_encoding_counts_validity_from_the_given_time() -> None:
    """DL/T 645-2007 §7.x relay control: N3..N8 are the expiry ssmmhhDDMMYY (BCD, +33h)."""
    code, out, _ = run("--json", "frame", "encode", "relay", "-a", "000000000001",
                       "--action", "trip", "--valid-minutes", "5",
                       "--time", "2026-11-22T10:00:00")
    assert code == 0
    wire = json.loads(out)["hex"]
    # expiry 2026-11-22 10:05:00 as ss mm hh DD MM YY = 00 05 10 22 11 26, each plus 33h
    assert wire.endswith("33 38 43 55 44 59 " + wire[-5:])


def test_relay_encoding_refuses_zero_validity() -> None:
    code, _out, err = run("frame", "encode", "relay", "-a", "000000000001",
                          "--valid-minutes", "0", "--time", "2026-11-22T10:00:00")
    assert code != 0
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


def test_read_accepts_a_raw_di(sim_bus: SimBus) -> None:
    """The contract says `read` reads data identifiers: one outside the catalogue is sent
    (the simulator refuses it with an abnormal reply: exit 1, not a usage error)."""
    code, _out, err = run("read", "-p", sim_bus.port, "--baud", "9600", "--timeout", "0.1",
                          "-a", "000000000001", "0400FFFE")
    assert code == 1, err
    assert err.startswith("error:") and "names:" not in err
