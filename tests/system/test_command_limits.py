"""Oversized commands against the daemon subprocess: answered `rejected`, and the daemon does
not keep the memory (issue 11: a 10 MB message grew it by 44 MB for good)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

from firmware_sim.bus import SimBus, make_meters
from firmware_sim.headend import HeadEnd
from tests.conftest import Broker
from tests.helpers import agent_config, contract_problems, mqtt_extra


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_ten_megabyte_commands_are_refused_and_forgotten(tmp_path: Path, broker: Broker) -> None:
    sim = SimBus(make_meters(1, load_kw=D(0)), baud=9600).start()
    config = agent_config(tmp_path, sim.port, ["000000000001"], poll_interval=1.0,
                          extra=mqtt_extra(tmp_path, broker.port))
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"],
                            env={**os.environ, "EDGE_AGENT_CONFIG": str(config)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    head = HeadEnd("127.0.0.1", broker.port, "gw1", tmp_path / "keys" / "headend-1.key").start()
    try:
        assert head.wait_for(lambda: head.status is not None and head.status["online"], 30)
        assert head.call("ping", {})["status"] == "ok"
        time.sleep(2.0)
        before = rss_mb(proc.pid)
        for n in range(3):
            head.send_raw(b'{"cmd": {"id": "big-%d", "x": "' % n + b"x" * 10_000_000 + b'"}}')
        assert head.wait_for(lambda: len(head.bodies("cmd/result")) >= 4, timeout=30)
        refused = head.bodies("cmd/result")[1:]
        assert all(r["status"] == "rejected" and "larger than the limit" in r["reason"]
                   for r in refused), refused
        assert head.call("ping", {})["status"] == "ok"
        deadline = time.monotonic() + 10.0  # the link trims the heap on its next tick;
        grown = rss_mb(proc.pid) - before  # a loaded machine may take a few seconds
        while grown >= 10 and time.monotonic() < deadline:
            time.sleep(0.5)
            grown = rss_mb(proc.pid) - before
        assert grown < 10, f"daemon grew by {grown} MB"  # 38 MB without malloc_trim
    finally:
        head.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        sim.stop()
    assert contract_problems(head.messages) == []
