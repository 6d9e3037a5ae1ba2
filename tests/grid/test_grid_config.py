"""`[concentrator]` and the per-meter field data in agent.toml."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError

BUS = '[[bus]]\nname = "b1"\nport = "/dev/null"\n'
TOTAL = '[[meter]]\naddress = "000000000099"\nbus = "b1"\nrole = "total"\nct_ratio = 40\n'
CUSTOMER = ('[[meter]]\naddress = "000000000001"\nbus = "b1"\naccount = "a"\ntariff = "flat"\n'
            'behind = "000000000099"\nphase = "B"\nlat = 30.2\nlon = 120.1\n')


def test_total_meters_are_kept_apart_from_billed_meters() -> None:
    config = parse_config(BUS + TOTAL + CUSTOMER + '[concentrator]\nenabled = true\n'
                          'loss_threshold = "0.1"\nbackfill_days = 7\nquarter_skew = 20\n')
    assert [m.address for m in config.meters] == ["000000000001"]
    assert config.total_meters[0].ct_ratio == 40 and config.meters[0].behind == "000000000099"
    assert config.concentrator.loss_threshold == D("0.1")
    assert config.concentrator.backfill_days == 7
    assert config.concentrator.quarter_skew == 20
    assert parse_config(BUS).concentrator.quarter_skew == 60
    assert not parse_config(BUS).concentrator.enabled  # off unless configured


@pytest.mark.parametrize(("text", "message"), [
    ('[concentrator]\nbroadcast_at = "15:02"\n', "more than 5 minutes from any hour"),
    ('[concentrator]\nbroadcast_at = "23:50"\n', "30 minutes from midnight"),
    ('[concentrator]\nbackfill_days = 8\n', "must be 1..7"),
    ('[concentrator]\nquarter_skew = 0\n', "must be 1..450 seconds"),
    ('[concentrator]\nclock_trust = "maybe"\n', "auto, trust or distrust"),
    (CUSTOMER.replace('"B"', '"D"'), "is not A, B, C or ABC"),
    (CUSTOMER.replace("30.2", "95.0"), "is not a latitude"),
    (CUSTOMER.replace("lon = 120.1\n", ""), "lat without lon"),
    (CUSTOMER + 'pole = ""\n', "1-64 printable characters"),
    (CUSTOMER + 'customer_class = "a\\tb"\n', "1-64 printable characters"),
    (CUSTOMER.replace("99", "98"), "is not a meter with role = total"),
])
def test_bad_values_are_reported(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BUS + TOTAL + text)
