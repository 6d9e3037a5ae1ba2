"""Meter protocols: bytes and meter semantics only, nothing about storage or MQTT."""
