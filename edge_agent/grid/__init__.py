"""The concentrator's book of record, as pure functions: line loss, anomalies, clock-sync policy,
frozen-data backfill.

Nothing here reads a port, a file or the database: inputs are readings and states, outputs are
results and `Event`s.  `runtime/concentrator.py` schedules the reads, `store/grid.py` keeps what
they produce, `field/collection.py` speaks to the meters.  Allowed imports: the standard library,
`edge_agent.prepaid` and `edge_agent.errors` (pinned by `tests/test_layers.py`).
"""
