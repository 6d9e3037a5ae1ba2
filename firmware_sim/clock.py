"""World time for simulated meters: real time, faster real time, or jumps on demand.

Every simulated meter integrates its energy, changes its tariff rate and freezes its registers
against one `SimClock`, so a test can make days pass in milliseconds (`advance`) and still find
registers and frozen records that agree with each other.  A meter's *own* clock (what it answers
for 04000101/04000102, and whose midnight it freezes at) is this world time plus the meter's
offset and drift; see `SimMeter.meter_time`.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta


class SimClock:
    """World time: starts at `start`, runs `speed` times real time, and jumps forward on demand.

    World time never goes backwards (meters integrate energy between two world instants), so
    `advance` refuses a negative step and `advance_to` a moment in the past.
    """

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("a clock cannot run backwards")
        self._start = start or datetime.now()
        self._origin = time.monotonic()
        self._jump = timedelta()
        self._speed = speed
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now()

    def _now(self) -> datetime:
        running = timedelta(seconds=(time.monotonic() - self._origin) * self._speed)
        return self._start + running + self._jump

    @property
    def speed(self) -> float:
        """World seconds per real second."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value < 0:
            raise ValueError("a clock cannot run backwards")
        with self._lock:  # re-base, so changing the speed does not move the present
            self._start, self._origin, self._jump = self._now(), time.monotonic(), timedelta()
            self._speed = value

    def advance(self, step: timedelta) -> datetime:
        """Jump forward by `step`; returns the new world time."""
        if step < timedelta():
            raise ValueError("world time cannot go backwards")
        with self._lock:
            self._jump += step
        return self.now()

    def advance_to(self, moment: datetime) -> datetime:
        """Jump forward to `moment` (a moment already past is refused)."""
        step = moment - self.now()
        if step < timedelta():
            raise ValueError(f"{moment} is already past")
        return self.advance(step)
