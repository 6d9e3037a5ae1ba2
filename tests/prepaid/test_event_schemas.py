"""The events issue 14 adds are in the events schema, with their detail shapes."""

from __future__ import annotations

import copy

import pytest

from tests.headend.test_schemas import errors, example

DETAILS = {
    "enforcement_suspended": {"reason": "headend_unreachable", "hours": 24,
                              "headend_last_seen": "2026-11-22T01:00:00Z"},
    "enforcement_resumed": {"reason": "startup"},
    "topup_gap": {"missing": [2, 3], "last_seq": 1, "seq": 4, "txn_id": "t4"},
    "topup_gap_closed": {"last_seq": 4},
    "policy_class_set": {"class": None, "tier_bonus_kwh": "100", "by": "headend"},
    "cutoff_deferred": {"reason": "force_required", "balance": "-1.0000"},
}


@pytest.mark.parametrize("kind", sorted(DETAILS))
def test_new_events_validate(kind: str) -> None:
    message = copy.deepcopy(example("events"))
    message.update(type=kind, severity="info", detail=DETAILS[kind])
    assert errors("events", message) == []
    message["detail"] = {"reason": "bogus"} if "reason" in DETAILS[kind] else {}
    assert errors("events", message)
