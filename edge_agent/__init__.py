"""edge-agent: prepaid electricity at the edge (DL/T 645 and Modbus meters, ledger, relays,
head-end sync over MQTT)."""

__version__ = "0.1.0"
