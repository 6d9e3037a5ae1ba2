"""The one source of time.

Records carry wall-clock time (`now`, timezone-aware UTC); intervals, timeouts and schedules use
the monotonic clock (`monotonic`), which never jumps when NTP or a technician sets the clock.
Everything that needs time takes a `Clock`, so tests and `bill replay` can drive it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class Clock:
    """The one source of time: wall clock for records, monotonic for intervals."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
