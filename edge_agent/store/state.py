"""Billing and enforcement state per meter: what the pure `prepaid/` functions remember
between cycles, loaded once at start and written back per cycle (the hot path).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from edge_agent.store.database import Database, epoch_micro, from_iso, to_decimal, to_iso

if TYPE_CHECKING:  # the prepaid records load when used: `edge-agent status` starts faster
    from edge_agent.prepaid.enforcement import MeterEnforcement
    from edge_agent.prepaid.records import MeterBilling


class BillingState(Database):
    """Billing and enforcement state per meter: what the pure `prepaid/` functions remember."""

    def billing_states(self) -> dict[str, MeterBilling]:
        from edge_agent.prepaid.records import MeterBilling
        from edge_agent.prepaid.tariff import AllowanceState, TierState

        rows = self.conn.execute(
            "SELECT m.address, m.account, m.tariff, m.multiplier, m.allowance, "
            "m.commissioned_at, s.last_kwh, s.last_rates, s.last_ts, s.charge_seq, "
            "s.tier_period, s.tier_used, s.allowance_month, s.allowance_used, s.last_daily "
            "FROM meters m JOIN meter_state s ON s.address = m.address WHERE m.active=1")
        out = {}
        for r in rows:
            rates = json.loads(r["last_rates"]) if r["last_rates"] else None
            out[r["address"]] = MeterBilling(
                meter=r["address"], account=r["account"], tariff=r["tariff"],
                multiplier=r["multiplier"] or 1, allowance=bool(r["allowance"]),
                commissioned_at=from_iso(r["commissioned_at"]),
                last_kwh=to_decimal(r["last_kwh"]),
                last_rates=tuple(Decimal(x) for x in rates) if rates else None,
                last_ts=from_iso(r["last_ts"]), charge_seq=r["charge_seq"] or 0,
                tier=TierState(r["tier_period"] or "", Decimal(r["tier_used"] or 0)),
                allowance_state=AllowanceState(r["allowance_month"] or "",
                                               Decimal(r["allowance_used"] or 0)),
                last_daily=date.fromisoformat(r["last_daily"]) if r["last_daily"] else None)
        return out

    def save_billing_states(self, states: Iterable[MeterBilling],
                            answered_at: dict[str, tuple[datetime, str | None]] | None = None,
                            previous: dict[str, MeterBilling] | None = None,
                            day_counts: dict[str, tuple[int, int]] | None = None) -> None:
        """Store billing states; with `answered_at`, also count each meter's answered poll
        (one UPDATE per meter per cycle instead of two: this is the hot path).  With
        `previous`, a state whose tier, allowance, daily and rate parts did not change gets
        the short UPDATE."""
        seen = answered_at or {}
        before = previous or {}
        short, full = [], []
        for st in states:
            answered = int(st.meter in seen)
            when, relay = seen.get(st.meter, (None, None))
            day = (day_counts or {}).get(st.meter, (None, None))
            head = (None if st.last_kwh is None else str(st.last_kwh), epoch_micro(st.last_ts),
                    st.charge_seq, answered, answered, answered, epoch_micro(when), relay, *day)
            old = before.get(st.meter)
            if old is not None and (old.tier, old.allowance_state, old.last_daily,
                                    old.last_rates) == (st.tier, st.allowance_state,
                                                        st.last_daily, st.last_rates):
                short.append((*head, st.meter))
            else:
                full.append((*head,
                             json.dumps([str(x) for x in st.last_rates]) if st.last_rates
                             else None, st.tier.period, str(st.tier.used),
                             st.allowance_state.month, str(st.allowance_state.used),
                             st.last_daily.isoformat() if st.last_daily else None, st.meter))
        common = ("UPDATE meter_state SET last_kwh=?, ts_us=?, charge_seq=?, polls=polls+?, "
                  "replies=replies+?, online=CASE WHEN ? THEN 1 ELSE online END, "
                  "seen_us=COALESCE(?, seen_us), relay=COALESCE(?, relay), "
                  "day_polls=COALESCE(?, day_polls), day_replies=COALESCE(?, day_replies)")
        self.conn.executemany(common + " WHERE address=?", short)
        self.conn.executemany(
            common + ", last_rates=?, tier_period=?, tier_used=?, allowance_month=?, "
            "allowance_used=?, last_daily=? WHERE address=?", full)

    def enforcement_states(self) -> dict[str, MeterEnforcement]:
        from edge_agent.prepaid.enforcement import MeterEnforcement

        rows = self.conn.execute(
            "SELECT m.address, m.account, m.keep_power, s.phase, s.alarm_since, s.deferred, "
            "s.cwt FROM meters m JOIN meter_state s ON s.address = m.address "
            "WHERE m.active=1")
        return {r["address"]: MeterEnforcement(r["address"], r["account"], bool(r["keep_power"]),
                                               r["phase"] or "normal", from_iso(r["alarm_since"]),
                                               r["deferred"], bool(r["cwt"])) for r in rows}

    def save_enforcement_states(self, states: Iterable[MeterEnforcement]) -> None:
        self.conn.executemany(
            "UPDATE meter_state SET phase=?, alarm_since=?, deferred=?, cwt=? WHERE address=?",
            [(s.phase, to_iso(s.alarm_since), s.deferred, int(s.cwt_raised), s.meter)
             for s in states])
