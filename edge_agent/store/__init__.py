"""All of edge-agent's SQL: nothing outside this package executes a statement.

`Store` is every table group on one SQLite database; each group is a module of its own:
`meters` (what a meter is, and what was last seen of it), `ledger` (accounts and the
append-only ledger), `state` (billing and enforcement state per meter), `readings` (readings
and events), `outbox` (store and forward), `settings` (key/value, command ids, pushed tariffs),
`retention` (bounded storage).
"""

from edge_agent.store.database import SCHEMA_VERSION
from edge_agent.store.grid import GridRecords
from edge_agent.store.ledger import LEDGER_KINDS, Ledger
from edge_agent.store.meters import MeterRecord, Meters
from edge_agent.store.outbox import Outbox
from edge_agent.store.readings import Readings
from edge_agent.store.retention import Pruned, Retention
from edge_agent.store.settings import Settings
from edge_agent.store.state import BillingState


class Store(Meters, Ledger, BillingState, Readings, Outbox, Settings, GridRecords,
            Retention):
    """The agent's database: open once per process; thread-safe for one writer at a time."""


__all__ = ["LEDGER_KINDS", "SCHEMA_VERSION", "MeterRecord", "Pruned", "Store"]
