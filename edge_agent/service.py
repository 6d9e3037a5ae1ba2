"""Build a complete agent from configuration: daemon plus head-end link plus local control."""

from __future__ import annotations

from edge_agent.config import Config
from edge_agent.daemon import Agent


def build_agent(config: Config) -> Agent:
    agent = Agent(config)
    agent.store.put("gateway_id", config.gateway_id)
    return agent
