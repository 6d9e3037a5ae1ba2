"""DL/T 645-2007 data-identifier catalogue, as a table, and the value codec it drives.

Each `DataItem` says how the bytes of one identifier are laid out: BCD digits with a fixed
number of decimals (and, for signed quantities, the sign in the top bit of the most significant
byte), dates, times, addresses, binary status words, or a block of several values of one format.
Values are exact `Decimal`s; nothing here ever produces a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from protocols.errors import FrameError


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier: how its bytes are laid out and what they mean."""

    di: int
    name: str
    kind: str  # bcd | date | time | datetime | address | status | block
    length: int  # bytes of one value
    decimals: int = 0
    signed: bool = False
    unit: str = ""
    count: int = 1  # values in a block
    version: str = "2007"

    @property
    def di_hex(self) -> str:
        width = 4 if self.version == "1997" else 8
        return f"{self.di:0{width}X}"

    @property
    def size(self) -> int:
        return self.length * self.count


def _energy(base: int, stem: str, signed: bool = False) -> list[DataItem]:
    items = [DataItem(base, f"{stem}_total", "bcd", 4, 2, signed, "kWh")]
    items += [
        DataItem(base + (rate << 8), f"{stem}_rate{rate}", "bcd", 4, 2, signed, "kWh")
        for rate in range(1, 5)
    ]
    items.append(DataItem(base + 0xFF00, f"{stem}_block", "block", 4, 2, signed, "kWh", 5))
    return items


_ITEMS: list[DataItem] = [
    *_energy(0x00000000, "combined_active", signed=True),
    *_energy(0x00010000, "forward_active"),
    *_energy(0x00020000, "reverse_active"),
    DataItem(0x02010100, "voltage_a", "bcd", 2, 1, False, "V"),
    DataItem(0x02010200, "voltage_b", "bcd", 2, 1, False, "V"),
    DataItem(0x02010300, "voltage_c", "bcd", 2, 1, False, "V"),
    DataItem(0x02020100, "current_a", "bcd", 3, 3, True, "A"),
    DataItem(0x02020200, "current_b", "bcd", 3, 3, True, "A"),
    DataItem(0x02020300, "current_c", "bcd", 3, 3, True, "A"),
    DataItem(0x02030000, "active_power_total", "bcd", 3, 4, True, "kW"),
    DataItem(0x02030100, "active_power_a", "bcd", 3, 4, True, "kW"),
    DataItem(0x02030200, "active_power_b", "bcd", 3, 4, True, "kW"),
    DataItem(0x02030300, "active_power_c", "bcd", 3, 4, True, "kW"),
    DataItem(0x02060000, "power_factor_total", "bcd", 2, 3, True, ""),
    DataItem(0x02800002, "frequency", "bcd", 2, 2, False, "Hz"),
    DataItem(0x04000101, "date", "date", 4),
    DataItem(0x04000102, "time", "time", 3),
    DataItem(0x04000401, "address", "address", 6),
    DataItem(0x04000402, "meter_number", "address", 6),
    *[DataItem(0x04000500 + n, f"status_word_{n}", "status", 2) for n in range(1, 8)],
    # Daily frozen data of the last 1st freeze; the older ones are `INSTANCES` (below).
    DataItem(0x05060001, "frozen_day_time", "datetime", 5),
    DataItem(0x05060101, "frozen_day_forward_active", "block", 4, 2, False, "kWh", 5),
    DataItem(0x05060201, "frozen_day_reverse_active", "block", 4, 2, False, "kWh", 5),
    DataItem(0x03300000, "programming_count", "bcd", 3, 0, False, ""),
    DataItem(0x03300100, "meter_clear_count", "bcd", 3, 0, False, ""),
    DataItem(0x03300D00, "cover_open_count", "bcd", 3, 0, False, ""),
    DataItem(0x03300E00, "terminal_cover_open_count", "bcd", 3, 0, False, ""),
    DataItem(0x03110000, "power_failure_count", "bcd", 3, 0, False, ""),
    # 全失压 (total voltage loss): total count XXXXXX, then cumulative time XXXXXX in minutes.
    DataItem(0x03050000, "total_voltage_loss", "block", 3, 0, False, "count, min", 2),
    # 恒定磁场干扰 (constant magnetic-field interference) total count.
    DataItem(0x03350000, "magnetic_interference_count", "bcd", 3, 0, False, ""),
]


@dataclass(frozen=True, slots=True)
class Instances:
    """A family of identifiers that differ only in DI0 = n, "the last n-th" record.

    DL/T 645-2007 numbers history by the low identifier byte: the last 1st..62nd daily
    freeze (`050600nn`, `050601nn`, `050602nn`) and the last 1st..12th settlement day of the
    energy registers (`0001FFnn` and friends).  Rather than hundreds of table rows, a family
    names its first member's layout once; `lookup` builds member n on demand, named
    `<stem>_last<n>`.
    """

    template: DataItem  # member n=1 (DI0 = 01); its name is ignored
    stem: str
    last: int  # highest n the standard defines

    def member(self, n: int) -> DataItem:
        if not 1 <= n <= self.last:
            raise KeyError(f"{self.stem} has instances 1..{self.last}, not {n}")
        t = self.template
        return DataItem(t.di - 1 + n, f"{self.stem}_last{n}", t.kind, t.length, t.decimals,
                        t.signed, t.unit, t.count, t.version)


def _settlement(base: int, stem: str, signed: bool = False) -> list[Instances]:
    return [Instances(DataItem(item.di + 1, "", item.kind, item.length, item.decimals,
                               item.signed, item.unit, item.count),
                      f"settlement_{item.name}", 12)
            for item in _energy(base, stem, signed)]


INSTANCES: list[Instances] = [
    Instances(first, first.name, 62) for first in _ITEMS if first.di >> 16 == 0x0506
] + [
    *_settlement(0x00000000, "combined_active", signed=True),
    *_settlement(0x00010000, "forward_active"),
    *_settlement(0x00020000, "reverse_active"),
]
_BY_BASE = {family.template.di & ~0xFF: family for family in INSTANCES}
_BY_STEM = {family.stem: family for family in INSTANCES}

BY_DI: dict[int, DataItem] = {item.di: item for item in _ITEMS}
BY_NAME: dict[str, DataItem] = {item.name: item for item in _ITEMS}
ALIASES = {
    "energy": "forward_active_total",
    "voltage": "voltage_a",
    "current": "current_a",
    "power": "active_power_total",
    "status": "status_word_3",
    "relay": "status_word_3",
}

# Running status word 3 (operation class).  Bits the prepaid logic relies on.
STATUS3_RELAY_OPEN = 1 << 4  # relay actually open (tripped)
STATUS3_RELAY_CMD_OPEN = 1 << 6  # last relay command was a trip
STATUS3_PRETRIP_ALARM = 1 << 7  # pre-trip alarm active
STATUS3_KEEP_POWER = 1 << 12  # keep-power (protected) state, as used by this agent


def _instance_by_di(di: int) -> DataItem | None:
    family = _BY_BASE.get(di & ~0xFF)
    if family is None or not 1 <= di & 0xFF <= family.last:
        return None
    return BY_DI.get(di) or family.member(di & 0xFF)


def _instance_by_name(name: str) -> DataItem | None:
    stem, sep, n = name.rpartition("_last")
    family = _BY_STEM.get(stem)
    if not sep or family is None or not n.isdigit() or not 1 <= int(n) <= family.last:
        return None
    return _instance_by_di(family.template.di - 1 + int(n))


def lookup(key: str | int) -> DataItem:
    """Find an item by name, alias or identifier (`00010000`, `0x00010000` or an int).

    Table rows first, then the numbered families of `INSTANCES` (`frozen_day_time_last2`,
    `05060002`, `settlement_forward_active_block_last1`, `0001FF01`, ...).
    """
    if isinstance(key, int):
        item = BY_DI.get(key) or _instance_by_di(key)
    else:
        text = key.strip()
        name = ALIASES.get(text.lower(), text.lower())
        item = BY_NAME.get(name) or _instance_by_name(name)
        if item is None:
            try:
                di = int(text.removeprefix("0x").removeprefix("0X"), 16)
            except ValueError:
                di = -1
            item = BY_DI.get(di) or _instance_by_di(di)
    if item is None:
        raise KeyError(f"unknown data identifier or name {key!r}")
    return item


def _bcd_digits(raw: bytes, signed: bool) -> tuple[bool, str]:
    big = bytearray(raw[::-1])
    negative = False
    if signed and big and big[0] & 0x80:
        negative = True
        big[0] &= 0x7F
    digits = big.hex()
    if not digits.isdigit():
        raise FrameError("BCD", f"value bytes {raw.hex(' ').upper()} are not BCD")
    return negative, digits


def decode_value(item: DataItem, raw: bytes) -> object:
    """Decode the (offset-removed) value bytes of one item."""
    if len(raw) != item.size:
        raise FrameError(
            "length", f"{item.name} needs {item.size} data bytes, got {len(raw)}"
        )
    if item.kind == "block":
        single = DataItem(item.di, item.name, "bcd", item.length, item.decimals, item.signed)
        return [
            decode_value(single, raw[i : i + item.length])
            for i in range(0, item.size, item.length)
        ]
    if item.kind == "status":
        return int.from_bytes(raw, "little")
    negative, digits = _bcd_digits(raw, item.signed)
    if item.kind == "bcd":
        value = Decimal(int(digits)).scaleb(-item.decimals)
        return -value if negative else value
    if item.kind == "address":
        return digits
    try:
        if item.kind == "date":  # YYMMDDWW
            return date(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
        if item.kind == "time":  # hhmmss
            return time(int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
        if item.kind == "datetime":  # YYMMDDhhmm
            return datetime(
                2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]),
                int(digits[6:8]), int(digits[8:10]),
            )
    except ValueError as exc:
        raise FrameError("BCD", f"{item.name} {digits} is not a valid {item.kind}") from exc
    raise FrameError("length", f"no codec for kind {item.kind}")


def encode_value(item: DataItem, value: object) -> bytes:
    """Encode one value of an item to its (offset-free) bytes; the inverse of `decode_value`."""
    if item.kind == "block":
        single = DataItem(item.di, item.name, "bcd", item.length, item.decimals, item.signed)
        assert isinstance(value, (list, tuple)) and len(value) == item.count
        return b"".join(encode_value(single, v) for v in value)
    if item.kind == "status":
        return int(value).to_bytes(item.length, "little")  # type: ignore[call-overload]
    if item.kind == "bcd":
        number = Decimal(str(value))
        negative = number < 0
        scaled = int(abs(number).scaleb(item.decimals).to_integral_value())
        digits = f"{scaled:0{item.length * 2}d}"
        if len(digits) > item.length * 2 or (item.signed and digits[0] >= "8"):
            raise ValueError(f"{value} does not fit {item.name}")
        big = bytearray(bytes.fromhex(digits))
        if negative:
            if not item.signed:
                raise ValueError(f"{item.name} cannot be negative")
            big[0] |= 0x80
        return bytes(big[::-1])
    if item.kind == "address":
        return bytes.fromhex(str(value).rjust(12, "0"))[::-1]
    if item.kind == "date":
        d = value if isinstance(value, date) else date.fromisoformat(str(value))
        text = f"{d.year % 100:02d}{d.month:02d}{d.day:02d}{d.isoweekday() % 7:02d}"
    elif item.kind == "time":
        t = value if isinstance(value, time) else time.fromisoformat(str(value))
        text = f"{t.hour:02d}{t.minute:02d}{t.second:02d}"
    elif item.kind == "datetime":
        d = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        text = f"{d.year % 100:02d}{d.month:02d}{d.day:02d}{d.hour:02d}{d.minute:02d}"
    else:
        raise ValueError(f"no codec for kind {item.kind}")
    return bytes.fromhex(text)[::-1]


def format_value(value: object) -> object:
    """A JSON-friendly form of a decoded value: decimals and dates as strings."""
    if isinstance(value, list):
        return [format_value(v) for v in value]
    if isinstance(value, (Decimal, date, time)):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value
