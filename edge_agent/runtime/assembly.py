"""Build a complete agent from configuration: daemon, head-end link, command handler."""

from __future__ import annotations

import queue

from edge_agent.config import Config
from edge_agent.runtime.daemon import Agent


def build_agent(config: Config) -> Agent:
    agent = Agent(config)
    agent.store.set_setting("gateway_id", config.gateway_id)
    from edge_agent.runtime.control import ControlServer

    agent.services.append(ControlServer(agent, config.control_socket, config.control_group))
    if config.metrics_port is not None:
        from edge_agent.runtime.metrics import MetricsServer

        agent.services.append(MetricsServer(agent, config.metrics_port))
    if config.mqtt.enabled:
        from edge_agent.headend.handler import CommandHandler
        from edge_agent.headend.keys import KeyRing
        from edge_agent.headend.mqtt_link import HeadEndLink

        inbox: queue.Queue[bytes] = queue.Queue()
        link = HeadEndLink(config.mqtt, config.gateway_id, agent.store, agent.status,
                           config.retention, inbox)
        agent.link = link
        agent.services += [link, CommandHandler(agent, KeyRing(config.keys.headend_keys), inbox)]
    return agent
