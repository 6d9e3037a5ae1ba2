"""SIGHUP reaches the concentrator: its areas, multipliers and settings follow the file
(a real agent over real SQLite; the freezes are stored as the frozen reads store them)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.grid.backfill import FrozenDay
from edge_agent.runtime.concentrator import Concentrator
from edge_agent.runtime.daemon import Agent
from tests.helpers import agent_config

TOTAL = "000000000099"
CUSTOMER = "000000000001"


def test_a_corrected_ct_ratio_applies_to_line_loss_after_sighup(tmp_path: Path) -> None:
    """The area's loss came out negative: the total meter's CT ratio in the file was wrong.
    The technician corrects it and sends SIGHUP (which reloads meters); the next day's loss
    must be computed with the corrected ratio, not the one of the daemon's start."""
    path = agent_config(tmp_path, "/dev/null", [], extra="[concentrator]\nenabled = true\n")

    def write(ct: int) -> None:
        tables = (f'[[meter]]\naddress = "{CUSTOMER}"\nbus = "bus1"\naccount = "A1"\n'
                  f'tariff = "flat"\nbehind = "{TOTAL}"\n\n'
                  f'[[meter]]\naddress = "{TOTAL}"\nbus = "bus1"\nrole = "total"\n'
                  f'ct_ratio = {ct}\n\n')
        text = path.read_text().split("[[meter]]")[0].split("[policy]")[0]
        rest = path.read_text().split("[policy]", 1)[1]
        path.write_text(text + tables + "[policy]" + rest)

    write(ct=5)
    agent = Agent(load_config(path))
    try:
        conc = Concentrator.for_agent(agent)  # as the daemon's loop makes it
        freezes = [FrozenDay(CUSTOMER, datetime(2026, 4, 2), (D("100"),)),
                   FrozenDay(CUSTOMER, datetime(2026, 4, 3), (D("197"),)),
                   FrozenDay(TOTAL, datetime(2026, 4, 2), (D("10"),)),
                   FrozenDay(TOTAL, datetime(2026, 4, 3), (D("20"),))]
        with agent.store.transaction():
            agent.store.record_freezes(freezes, datetime(2026, 4, 3, tzinfo=UTC))
        (before,) = conc.area_losses(date(2026, 4, 2))
        assert before.negative  # 10 x 5 = 50 kWh supplied, 97 sold
        write(ct=10)
        assert not any(n.startswith("refused") for n in agent.reload())
        (after,) = conc.area_losses(date(2026, 4, 2))
        assert after.supply_kwh == D(100) and not after.negative
        assert after.loss_kwh == D(3)
    finally:
        agent.processing.shutdown()
        agent.store.close()
