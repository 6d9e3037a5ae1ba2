"""A bus's quantities are single values under one name each: a block identifier (several
values in one reading) is refused by the configuration, naming what to write instead."""

from __future__ import annotations

import pytest

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError

BUS = '[[bus]]\nname = "b1"\nport = "/dev/null"\nquantities = [{}]\n'


def test_single_quantities_are_accepted() -> None:
    config = parse_config(BUS.format('"voltage_a", "current_a"'))
    assert config.buses[0].quantities == ("voltage_a", "current_a")


def test_a_block_is_refused_with_the_names_to_use() -> None:
    with pytest.raises(ConfigError, match="block of several values: name each"):
        parse_config(BUS.format('"forward_active_block"'))
