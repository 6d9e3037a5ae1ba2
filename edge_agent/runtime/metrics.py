"""Optional Prometheus metrics on a local port (`[agent] metrics_port`), text format 0.0.4.

Served on 127.0.0.1 only: a gateway's metrics are for its own node exporter or an SSH tunnel,
not for the network.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_agent.errors import ConfigError


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(agent: Any) -> str:
    store = agent.store
    lines = [
        "# HELP edge_agent_cycles_total Poll cycles stored since start.",
        "# TYPE edge_agent_cycles_total counter",
        f"edge_agent_cycles_total {agent.cycles}",
        "# HELP edge_agent_outbox_messages Messages waiting for the head end.",
        "# TYPE edge_agent_outbox_messages gauge",
    ]
    depth = store.outbox_depth()
    for kind in ("telemetry", "events", "ledger", "cmd_result"):
        lines.append(f'edge_agent_outbox_messages{{kind="{kind}"}} {depth.get(kind, 0)}')
    broker = store.setting("broker_state", "") or ""
    lines += ["# HELP edge_agent_broker_connected 1 while connected to the MQTT broker.",
              "# TYPE edge_agent_broker_connected gauge",
              f"edge_agent_broker_connected {int(broker.startswith('connected'))}",
              "# HELP edge_agent_meter_online 1 if the meter answered its last poll.",
              "# TYPE edge_agent_meter_online gauge"]
    meters = store.meter_status()
    for m in meters:
        lines.append(f'edge_agent_meter_online{{meter="{m["meter"]}",bus="{_escape(m["bus"])}"}}'
                     f' {int(m["online"])}')
    lines += ["# HELP edge_agent_meter_success_ratio Replies / requests over the last day.",
              "# TYPE edge_agent_meter_success_ratio gauge"]
    for m in meters:
        if m["success_rate"] is not None:
            lines.append(f'edge_agent_meter_success_ratio{{meter="{m["meter"]}"}} '
                         f'{m["success_rate"]}')
    lines += ["# HELP edge_agent_meter_relay_open 1 if the relay is open (tripped).",
              "# TYPE edge_agent_meter_relay_open gauge"]
    for m in meters:
        lines.append(f'edge_agent_meter_relay_open{{meter="{m["meter"]}"}} '
                     f'{int(m["relay"] == "open")}')
    # No per-account balance series: balances are business data with one series per
    # customer (unbounded cardinality); the head end has them from the ledger.
    lines += _bus_lines(agent) + _process_lines(agent)
    return "\n".join(lines) + "\n"


def _gauge(name: str, help_text: str, kind: str = "gauge") -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _bus_lines(agent: Any) -> list[str]:
    """Per bus: health state, requests, timeouts, last stored cycle, last cycle's duration."""
    from edge_agent.runtime.health import STATES

    now = agent.clock.monotonic()
    records = list(getattr(agent, "bus_health", {}).values())
    lines = _gauge("edge_agent_bus_state", "1 for the bus's current state (ok, degraded, "
                   "stalled).")
    for r in records:
        state = r.state(now)
        lines += [f'edge_agent_bus_state{{bus="{_escape(r.name)}",state="{s}"}} '
                  f'{int(s == state)}' for s in STATES]
    for name, help_text, attr in (
            ("edge_agent_bus_requests_total", "Meter polls sent since start.", "requests"),
            ("edge_agent_bus_timeouts_total", "Meter polls not answered since start.",
             "timeouts")):
        lines += _gauge(name, help_text, "counter")
        lines += [f'{name}{{bus="{_escape(r.name)}"}} {getattr(r, attr)}' for r in records]
    lines += _gauge("edge_agent_bus_last_success_timestamp_seconds",
                    "Unix time of the bus's last stored poll cycle.")
    lines += [f'edge_agent_bus_last_success_timestamp_seconds{{bus="{_escape(r.name)}"}} '
              f'{r.last_success.timestamp():.3f}' for r in records if r.last_success]
    lines += _gauge("edge_agent_bus_poll_duration_seconds",
                    "How long the bus's last poll cycle took.")
    lines += [f'edge_agent_bus_poll_duration_seconds{{bus="{_escape(r.name)}"}} '
              f'{r.last_duration:.3f}' for r in records if r.last_duration is not None]
    return lines


def _process_lines(agent: Any) -> list[str]:
    """The outbox's oldest message age, resident memory and build information."""
    import platform

    from edge_agent import __version__

    lines = _gauge("edge_agent_outbox_oldest_age_seconds",
                   "Age of the oldest message waiting for the head end (0: empty).")
    oldest = agent.store.outbox_oldest()
    age = 0.0 if oldest is None else (agent.clock.now() - oldest).total_seconds()
    lines.append(f"edge_agent_outbox_oldest_age_seconds {max(age, 0.0):.1f}")
    rss = resident_bytes()
    if rss is not None:
        lines += _gauge("process_resident_memory_bytes", "Resident memory of the daemon.")
        lines.append(f"process_resident_memory_bytes {rss}")
    lines += _gauge("edge_agent_build_info", "Version of edge-agent and Python (always 1).")
    lines.append(f'edge_agent_build_info{{version="{_escape(__version__)}",'
                 f'python="{platform.python_version()}"}} 1')
    return lines


def resident_bytes() -> int | None:
    """VmRSS of this process from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MetricsServer:
    def __init__(self, agent: Any, port: int) -> None:
        agent_ref = agent

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                text = render(agent_ref).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                if body:
                    self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConfigError(f"[agent].metrics_port {port}: cannot listen on 127.0.0.1 "
                              f"({exc.strerror})") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
