"""Modbus register maps (data files in `maps/`) and the value codec.

A map names each quantity's table (`input` FC04 or `holding` FC03), start address, type
(`float32`, `int32`, `uint32`, `int16`, `uint16`), word order of 32-bit values (`big`: high
word first, `little`: low word first), an optional integer `scale` and the decimals the value
is rounded to.  Values come out as exact `Decimal`s: a float32 is first taken exactly, then
rounded half-even to the map's decimals (energy to 0.01 kWh, the DL/T 645 resolution).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources

from protocols.errors import FrameError, RegisterMapError

TYPES = {"float32": (2, ">f"), "int32": (2, ">i"), "uint32": (2, ">I"), "int16": (1, ">h"),
         "uint16": (1, ">H")}
TABLES = ("input", "holding")


@dataclass(frozen=True)
class Register:
    name: str
    table: str
    address: int
    type: str
    word_order: str = "big"
    unit: str = ""
    decimals: int = 2
    scale: Decimal = Decimal(1)

    @property
    def count(self) -> int:
        return TYPES[self.type][0]


@dataclass(frozen=True)
class RelayPoint:
    kind: str  # coil | register
    address: int
    open_value: int | bool = True
    closed_value: int | bool = False


@dataclass(frozen=True)
class RegisterMap:
    model: str
    description: str
    registers: dict[str, Register]
    energy: str
    relay: RelayPoint | None = None

    def register(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.model} has no register {name!r} (has: "
                           f"{', '.join(sorted(self.registers))})") from None


def parse_map(data: dict[str, object], source: str) -> RegisterMap:
    problems: list[str] = []
    registers: dict[str, Register] = {}
    raw_registers = data.get("registers")
    if not isinstance(raw_registers, dict) or not raw_registers:
        raise RegisterMapError(f"{source}: registers must be a table of named registers")
    for name, spec in raw_registers.items():
        where = f"{source}: registers.{name}"
        if not isinstance(spec, dict):
            problems.append(f"{where}: must be a table")
            continue
        if spec.get("table") not in TABLES:
            problems.append(f"{where}.table: {spec.get('table')!r} is not input or holding")
        if spec.get("type") not in TYPES:
            problems.append(f"{where}.type: {spec.get('type')!r} is not one of "
                            f"{', '.join(TYPES)}")
        if spec.get("word_order", "big") not in ("big", "little"):
            problems.append(f"{where}.word_order: must be big or little")
        address = spec.get("address")
        if not isinstance(address, int) or not 0 <= address <= 65535:
            problems.append(f"{where}.address: {address!r} is not 0..65535")
        if problems:
            continue
        registers[name] = Register(name, spec["table"], address, spec["type"],
                                   spec.get("word_order", "big"), spec.get("unit", ""),
                                   int(spec.get("decimals", 2)),
                                   Decimal(str(spec.get("scale", "1"))))
    energy = data.get("energy")
    if energy not in registers:
        problems.append(f"{source}: energy: {energy!r} is not one of the registers")
    relay = None
    if isinstance(data.get("relay"), dict):
        spec = data["relay"]  # type: ignore[assignment]
        if spec.get("kind") not in ("coil", "register"):  # type: ignore[union-attr]
            problems.append(f"{source}: relay.kind must be coil or register")
        else:
            relay = RelayPoint(spec["kind"], int(spec["address"]),  # type: ignore[index]
                               spec.get("open_value", True),  # type: ignore[union-attr]
                               spec.get("closed_value", False))  # type: ignore[union-attr]
    if problems:
        raise RegisterMapError("; ".join(problems))
    return RegisterMap(str(data.get("model", source)), str(data.get("description", "")),
                       registers, str(energy), relay)


def load_map(model: str) -> RegisterMap:
    """A shipped map by model name (`eastron-sdm120`, `chint-ddsu666`, ...)."""
    try:
        text = resources.files("protocols.modbus").joinpath("maps", f"{model}.json").read_text()
    except FileNotFoundError:
        raise RegisterMapError(f"no Modbus register map {model!r} (known: {', '.join(MAPS)})") \
            from None
    return parse_map(json.loads(text), f"maps/{model}.json")


def decode(register: Register, words: list[int]) -> Decimal:
    """Register words (as read) to an exact, rounded Decimal."""
    if len(words) != register.count:
        raise FrameError("length", f"{register.name} needs {register.count} registers, "
                         f"got {len(words)}")
    ordered = list(words) if register.word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    (value,) = struct.unpack(TYPES[register.type][1], raw)
    if register.type == "float32":
        if value != value or value in (float("inf"), float("-inf")):
            raise FrameError("value", f"{register.name} is not a number ({value})")
        exact = Decimal(value)
    else:
        exact = Decimal(value) * register.scale
    return exact.quantize(Decimal(1).scaleb(-register.decimals), ROUND_HALF_EVEN)


def encode(register: Register, value: Decimal | int | float) -> list[int]:
    """A value to register words (for the simulator and for writes)."""
    if register.type == "float32":
        raw = struct.pack(">f", float(value))
    else:
        raw = struct.pack(TYPES[register.type][1],
                          int((Decimal(str(value)) / register.scale).to_integral_value()))
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return words if register.word_order == "big" else list(reversed(words))


MAPS = tuple(sorted(p.name.removesuffix(".json") for p in
                    resources.files("protocols.modbus").joinpath("maps").iterdir()
                    if p.name.endswith(".json")))
