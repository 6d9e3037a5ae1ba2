"""Register rollover (issue 10 point 6): a register that wraps past its maximum is billed the
wrapped delta with a `register_rollover` event; any other fall stays `register_decrease`."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.prepaid.billing import rollover_delta
from tests.helpers import agent_config, at, energy_poll, processor


def step(p, when: str, kwh: str) -> None:
    p.process([energy_poll("000000000001", at(when), kwh)], at(when))


def kinds(p) -> list[str]:
    return [e["type"] for e in p.store.events(limit=100)]


def test_wrap_is_billed_as_the_wrapped_delta(tmp_path: Path) -> None:
    p = processor(tmp_path / "a.db", initial="999999.00")
    step(p, "2026-11-22 08:15", "999999.50")
    assert p.store.balance("A1") == D("-0.280000")  # 0.50 kWh at 0.56
    step(p, "2026-11-22 08:30", "0.50")  # 999999.99 -> 0.00 -> 0.50: 1.00 kWh
    assert p.store.balance("A1") == D("-0.840000")
    [event] = [e for e in p.store.events(limit=100) if e["type"] == "register_rollover"]
    assert event["detail"]["delta"] == "1.00"
    assert "register_decrease" not in kinds(p)
    step(p, "2026-11-22 08:45", "1.50")  # billing goes on from the wrapped register
    assert p.store.balance("A1") == D("-1.400000")


def test_other_falls_stay_a_decrease(tmp_path: Path) -> None:
    p = processor(tmp_path / "a.db", initial="500.00")
    step(p, "2026-11-22 08:15", "501.00")
    step(p, "2026-11-22 08:30", "0.50")  # far from the maximum: a cleared meter, not a wrap
    assert "register_decrease" in kinds(p) and "register_rollover" not in kinds(p)
    assert p.store.balance("A1") == D("-0.560000")


def test_a_configured_smaller_register(tmp_path: Path) -> None:
    p = processor(tmp_path / "a.db", initial="99990.0")
    p.register_max = {"000000000001": D("99999.9")}
    step(p, "2026-11-22 08:15", "99999.0")
    step(p, "2026-11-22 08:30", "1.0")  # 0.9 + 0.1 + 1.0 = 2.0 kWh
    [event] = [e for e in p.store.events(limit=100) if e["type"] == "register_rollover"]
    assert D(event["detail"]["delta"]) == D("2.0")


@pytest.mark.parametrize(("last", "kwh", "expected"), [
    ("999999.99", "0.00", "0.01"),
    ("999999.50", "0.50", "1.00"),
    ("999000.00", "5.00", "1005.00"),
    ("500000.00", "1.00", None),  # half the register back: not a wrap
    ("999999.50", "999999.00", None),  # a small fall near the top: a bad read
])
def test_rollover_delta(last: str, kwh: str, expected: str | None) -> None:
    got = rollover_delta(D(last), D(kwh), D("999999.99"))
    assert got == (None if expected is None else D(expected))


def test_register_max_is_configured_per_meter(tmp_path: Path) -> None:
    path = agent_config(tmp_path, "/dev/null", ["000000000001"])
    text = path.read_text().replace('initial_kwh = "0.00"\n',
                                    'initial_kwh = "0.00"\nregister_max = "99999.9"\n')
    path.write_text(text)
    assert load_config(path).meters[0].register_max == D("99999.9")
    path.write_text(text.replace('"99999.9"', '"lots"'))
    with pytest.raises(ConfigError, match="register_max"):
        load_config(path)
