"""Shared fixtures: simulated meter buses on real pseudo-terminals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.field.dlt645 import Dlt645Client
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters


@pytest.fixture
def sim_bus() -> Iterator[SimBus]:
    """Eight simulated DL/T 645 meters (000000000001..8) on one pty, 9600 baud."""
    bus = SimBus(make_meters(8), baud=9600).start()
    yield bus
    bus.stop()


@pytest.fixture
def client(sim_bus: SimBus) -> Iterator[Dlt645Client]:
    bus = Bus(LineSettings(sim_bus.port, baud=9600, response_timeout=0.1, gap=0))
    yield Dlt645Client(bus)
    bus.close()


# -- a real Mosquitto broker ------------------------------------------------------------
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Mosquitto process on a free loopback port; can be stopped and started again."""

    def __init__(self, directory: Path, extra: str = "", port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\n"
            f"max_queued_messages 100000\nlog_dest file {directory}/mosquitto.log\n"
            f"user root\n{extra}\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"mosquitto exited: {err}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # graceful: persistence is written on the way out
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
