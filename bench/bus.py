"""Bus throughput against the wire-time limit, and codec speed beside an independent codec.

Run: python3 bench/bus.py [--meters 32] [--baud 9600] [--rounds 3]

The simulator emulates wire timing (bytes x 11 bits / baud for each request and reply), so the
limit is the time the bytes need on the line; the ratio says how much of it the agent's own
overhead (Python, pty, framing, checks) leaves.  The inter-frame gap is set to 0 here: it is a
property of the installation, not overhead of the agent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.field.dlt645 import Dlt645Client
from edge_agent.field.transport import Bus, LineSettings
from firmware_sim.bus import SimBus, make_meters
from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import Control, Frame, decode


def bench_bus(meters: int, baud: int, rounds: int) -> dict[str, float]:
    sim = SimBus(make_meters(meters), baud=baud, wire_timing=True).start()
    client = Dlt645Client(Bus(LineSettings(sim.port, baud=baud, gap=0.0,
                                           response_timeout=0.5)))
    addresses = [m.address for m in sim.meters]
    item = catalogue.BY_NAME["forward_active_total"]
    request_len = len(messages.read(addresses[0], item).encode())
    reply_len = len(Frame(addresses[0], Control(0x11, reply=True),
                          bytes(4 + item.size)).encode())
    client.read(addresses[0], item.di)  # open the port, warm up
    started = time.perf_counter()
    reads = 0
    for _ in range(rounds):
        for address in addresses:
            client.read(address, item.di)
            reads += 1
    elapsed = time.perf_counter() - started
    client.bus.close()
    sim.stop()
    wire_per_read = (request_len + reply_len) * 11 / baud
    achieved = reads / elapsed
    limit = 1 / wire_per_read
    return {"reads": reads, "seconds": elapsed, "reads_per_s": achieved,
            "limit_per_s": limit, "ratio": achieved / limit,
            "bytes_per_read": request_len + reply_len}


def bench_modbus(meters: int, baud: int, rounds: int) -> dict[str, float]:
    """Modbus RTU reads of total energy (one float32, FC04) from simulated SDM120 meters."""
    from edge_agent.field.modbus import ModbusMeterClient
    from firmware_sim.modbus_meter import ModbusSimBus, make_modbus_meters
    from protocols.modbus import load_map

    sim = ModbusSimBus(make_modbus_meters(meters, "eastron-sdm120"), baud=baud,
                       wire_timing=True).start()
    client = ModbusMeterClient(LineSettings(sim.port, baud=baud, parity="N", gap=0.0,
                                            response_timeout=0.5, retries=0))
    mapping = load_map("eastron-sdm120")
    client.energy(1, mapping)
    started = time.perf_counter()
    reads = 0
    for _ in range(rounds):
        for unit in range(1, meters + 1):
            client.energy(unit, mapping)
            reads += 1
    elapsed = time.perf_counter() - started
    client.close()
    sim.stop()
    # 8-byte request + 9-byte reply, and the 3.5-character silence before each frame (RTU).
    chars = 8 + 9 + 2 * 3.5
    limit = baud / (10 * chars)
    return {"reads": reads, "seconds": elapsed, "reads_per_s": reads / elapsed,
            "limit_per_s": limit, "ratio": reads / elapsed / limit}


def bench_codec(count: int) -> dict[str, float]:
    from dlt645.protocol.protocol import DLT645Protocol as Independent

    frame = Frame("000000000001", Control(0x11, reply=True),
                  messages.di_bytes(0x00010000) + bytes.fromhex("45230100"))
    wire = frame.encode()
    wire_address = bytes.fromhex(frame.address)[::-1]
    out: dict[str, float] = {}

    def rate(fn) -> float:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        for _ in range(count):
            fn()
        return count / (time.perf_counter() - started)

    out["ours_encode"] = rate(frame.encode)
    out["ours_decode"] = rate(lambda: decode(wire))
    out["independent_encode"] = rate(
        lambda: Independent.build_frame(wire_address, 0x91, frame.data, 4))
    out["independent_decode"] = rate(lambda: Independent.deserialize(wire))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=32)
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args()
    b = bench_bus(args.meters, args.baud, args.rounds)
    print(f"DL/T 645 bus: {args.meters} meters, {args.baud} baud, wire timing on, "
          f"{b['reads']:.0f} reads of energy in {b['seconds']:.2f} s")
    print(f"  reads/s achieved     {b['reads_per_s']:.2f}")
    print(f"  wire-time limit      {b['limit_per_s']:.2f} reads/s "
          f"({b['bytes_per_read']:.0f} bytes per read incl. FE preambles)")
    print(f"  ratio to the limit   {b['ratio']:.3f}  (target >= 0.95)")
    m = bench_modbus(args.meters, args.baud, args.rounds)
    print(f"Modbus RTU bus: {args.meters} SDM120 meters, {args.baud} 8N1, wire timing on, "
          f"{m['reads']:.0f} reads of energy (FC04, float32) in {m['seconds']:.2f} s")
    print(f"  reads/s achieved     {m['reads_per_s']:.2f}")
    print(f"  wire-time limit      {m['limit_per_s']:.2f} reads/s (8 + 9 bytes and 2 x 3.5 "
          f"character silences per read)")
    print(f"  ratio to the limit   {m['ratio']:.3f}")
    c = bench_codec(args.frames)
    print(f"DL/T 645 codec, {args.frames} frames (frames per second):")
    print(f"  {'':12}{'edge-agent':>14}{'dlt645 3.2.0':>16}")
    print(f"  {'encode':12}{c['ours_encode']:>14,.0f}{c['independent_encode']:>16,.0f}")
    print(f"  {'decode':12}{c['ours_decode']:>14,.0f}{c['independent_decode']:>16,.0f}")


if __name__ == "__main__":
    main()
