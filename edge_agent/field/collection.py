"""What a concentrator reads and writes besides the routine poll: daily frozen records, meter
clocks, clock set and broadcast time (DL/T 645-2007 only).

Functions over a `Dlt645Client` (the driver's `client`), run on the bus's worker thread like
every other use of the bus.  DL/T 645-1997 and Modbus meters keep no frozen data and take no
time set here: `supports_frozen` tells the caller to leave them to the routine poll.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from edge_agent.errors import MeterAbnormalReply
from edge_agent.field.dlt645 import Dlt645Client, Dlt645Driver
from edge_agent.grid.backfill import FrozenDay
from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import find_frame


def client_of(driver: Any) -> Dlt645Client | None:
    """The DL/T 645-2007 client behind a driver, or None (1997, Modbus: no frozen data)."""
    if isinstance(driver, Dlt645Driver) and driver.client.version == "2007":
        return driver.client
    return None


def supports_frozen(driver: Any) -> bool:
    return client_of(driver) is not None


def read_freeze(client: Dlt645Client, meter: str, n: int) -> FrozenDay:
    """The NNth last daily freeze: its time (050600NN) and forward active block (050601NN)."""
    at = client.read(meter, 0x05060000 + n).value
    block = client.read(meter, 0x05060100 + n).value
    assert isinstance(at, datetime) and isinstance(block, list)
    return FrozenDay(meter, at, tuple(Decimal(str(v)) for v in block))


def read_freezes(client: Dlt645Client, meter: str, ns: list[int]) -> list[FrozenDay]:
    """The freezes asked for that the meter has (`no requested data`: not made yet)."""
    out = []
    for n in ns:
        try:
            out.append(read_freeze(client, meter, n))
        except MeterAbnormalReply:
            break  # an older one than a missing one does not exist either
    return out


def read_settlement(client: Dlt645Client, meter: str, n: int, at: datetime) -> FrozenDay:
    """The NNth last settlement-day freeze of the forward active block (0001FFNN); the meter
    sends no time with it, so `at` is the settlement moment its parameters say."""
    block = client.read(meter, 0x0001FF00 + n).value
    assert isinstance(block, list)
    return FrozenDay(meter, at, tuple(Decimal(str(v)) for v in block))


def read_clock(client: Dlt645Client, meter: str) -> datetime:
    """The meter's date and time (04000101, 04000102), read so a midnight between the two
    reads cannot pair today's time with yesterday's date."""
    first = client.read(meter, "time").value
    day = client.read(meter, "date").value
    then = client.read(meter, "time").value
    assert isinstance(first, time) and isinstance(day, date) and isinstance(then, time)
    if then < first:  # the date rolled over between the reads: read it again
        day = client.read(meter, "date").value
        assert isinstance(day, date)
    return datetime.combine(day, then)


def set_clock(client: Dlt645Client, meter: str, moment: datetime) -> None:
    """Set one meter's date and time (0x14 write with the configured password).  Raises
    `MeterAbnormalReply` when the meter refuses (no authority, or locked)."""
    for key, value in (("date", moment.date()), ("time", moment.time().replace(microsecond=0))):
        item = catalogue.lookup(key)
        client.transact(messages.write(meter, item.di, catalogue.encode_value(item, value),
                                       client.password, client.operator), reply_size=16)


def broadcast_time(client: Dlt645Client, moment: datetime) -> None:
    """Broadcast time (0x08) to every meter on the bus; no meter answers a broadcast."""
    client.bus.transact(messages.broadcast_time(moment).encode(), find_frame, expect_reply=False)


def read_counter(client: Dlt645Client, meter: str, name: str) -> int:
    return int(client.read(meter, name).value)  # type: ignore[call-overload]
