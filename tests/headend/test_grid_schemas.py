"""The `lineloss` and `usage` bodies the concentrator queues match their schemas (issue 13)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from test_schemas import EXAMPLES, REGISTRY, SCHEMAS

from edge_agent.grid.backfill import FrozenDay
from edge_agent.grid.lineloss import day_window, line_loss
from edge_agent.grid.usage import account_usage, meter_usage
from edge_agent.prepaid.records import MeterBilling
from edge_agent.prepaid.tariff import TierState, tariff_from_text

TZ = ZoneInfo("Asia/Shanghai")
HEADER = {"v": 1, "gw": "gw1", "seq": 7}


def errors(name: str, message: object) -> list[str]:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    validator = Draft202012Validator(schema, registry=REGISTRY, format_checker=FormatChecker())
    return [e.message for e in validator.iter_errors(message)]


@pytest.mark.parametrize("name", ["lineloss", "usage"])
def test_examples_validate(name: str) -> None:
    assert errors(name, json.loads((EXAMPLES / f"{name}.json").read_text())) == []


def test_line_loss_bodies_validate() -> None:
    start, end = day_window(date(2026, 4, 2), TZ)
    for sales in ({"000000000001": D("50.00")}, {"000000000001": None}):
        body = line_loss("000000000099", "day", start, end, D("60.00"), sales,
                         D("0.08")).as_dict()
        assert errors("lineloss", {**HEADER, **body}) == []
    assert errors("lineloss", {**HEADER, **body, "rate": 0.1}) != []  # never a float
    assert body["reason"] == "1 customer meter(s) not read"
    late = line_loss("000000000099", "15min", start, start + (end - start) / 96, D("1.00"),
                     {"000000000001": D("0.90")}, D("0.08"), ["000000000001"], 60).as_dict()
    assert late["late_meters"] == ["000000000001"] and late["incomplete"]
    assert errors("lineloss", {**HEADER, **late}) == []


def test_usage_body_validates() -> None:
    tariff = tariff_from_text('[tariff]\nid = "t"\n[energy]\ntype = "tiered"\nperiod = '
                              '"month"\nblocks = [ { up_to = "50", price = "0.5" }, '
                              '{ price = "0.8" } ]\n')
    state = MeterBilling("000000000001", "ACC-1", "t", tier=TierState("2026-04", D("24")))
    first = FrozenDay("000000000001", datetime(2026, 4, 2), (D(0),) * 5)
    last = FrozenDay("000000000001", datetime(2026, 4, 3),
                     (D(24), D(0), D(6), D(12), D(6)))
    body = account_usage(date(2026, 4, 2), "ACC-1", [meter_usage(first, last, state, tariff)],
                         D("12.00"))
    assert body["tier"]["block_remaining"] == "26"
    assert errors("usage", {**HEADER, **body}) == []


def test_an_accounts_day_with_two_meters_validates() -> None:
    tariff = tariff_from_text('[tariff]\nid = "t"\n[energy]\ntype = "tiered"\nperiod = '
                              '"month"\nblocks = [ { up_to = "50", price = "0.5" }, '
                              '{ price = "0.8" } ]\n')
    parts = []
    for meter, used in (("000000000002", "60"), ("000000000001", "24")):
        state = MeterBilling(meter, "ACC-1", "t", tier=TierState("2026-04", D(used)))
        first = FrozenDay(meter, datetime(2026, 4, 2), (D(0),) * 5)
        last = FrozenDay(meter, datetime(2026, 4, 3), (D(10), D(0), D(2), D(5), D(3)))
        parts.append(meter_usage(first, last, state, tariff))
    body = account_usage(date(2026, 4, 2), "ACC-1", parts, D("10.00"), ["000000000003"])
    assert (body["meter"], body["kwh"], body["tier"], body["tariff"]) == (None, "20", None, "t")
    assert body["rates"] == {"sharp": "0", "peak": "4", "flat": "10", "valley": "6"}
    assert [m["meter"] for m in body["meters"]] == ["000000000001", "000000000002"]
    assert [m["tier"]["block"] for m in body["meters"]] == [1, 2]  # each meter's own
    assert body["missing_meters"] == ["000000000003"] and body["cost"] == "10.0000"
    assert errors("usage", {**HEADER, **body}) == []
    assert errors("usage", {**HEADER, **body, "meters": []}) != []
