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
    lines += ["# HELP edge_agent_account_balance_yuan Account balance (display; the ledger is "
              "exact).", "# TYPE edge_agent_account_balance_yuan gauge"]
    for account, balance in store.balances().items():
        lines.append(f'edge_agent_account_balance_yuan{{account="{_escape(account)}"}} '
                     f'{balance.quantize(1 / __import__("decimal").Decimal(100))}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, agent: Any, port: int) -> None:
        agent_ref = agent

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render(agent_ref).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
