"""A Mosquitto broker on a free loopback port for the benchmarks (the tests have their own
fixture in tests/conftest.py).  Only 127.0.0.1: benchmarks send traffic to this machine."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def start_mosquitto(directory: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """Start mosquitto with `extra` configuration lines; return the process and its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"log_dest file {directory}/mosquitto.log\nuser root\n{extra}\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("error: mosquitto did not start listening")
