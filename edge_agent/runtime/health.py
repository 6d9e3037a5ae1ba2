"""Health of each bus, as the daemon sees it live: `ok`, `degraded` or `stalled`.

A bus is `ok` when its last poll cycle was stored and every meter on it answered; `degraded`
when the last cycle failed (a port error, the database) or some meters did not answer;
`stalled` when no cycle has been stored for its stall limit (three poll intervals, at least
`MIN_STALL` seconds).  The daemon starves systemd's watchdog while any bus is stalled, shows
the states in its status message and metrics, and logs each change once, at a priority
journald can filter on (`journalctl -p warning` shows every failure).

Standard library only: `edge-agent status` imports it (start-up time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("edge_agent.health")

OK, DEGRADED, STALLED = "ok", "degraded", "stalled"
STATES = (OK, DEGRADED, STALLED)
MIN_STALL = 5.0  # seconds: short test intervals must not starve the watchdog on one slow cycle
NOTICE = 25  # between INFO and WARNING: journald priority 5 (relay actions)
logging.addLevelName(NOTICE, "NOTICE")


class ActivityDriver:
    """A bus driver whose finished meter polls count as activity in the bus's health (every
    other attribute is the driver's own)."""

    def __init__(self, driver: Any, record: BusHealth, clock: Any) -> None:
        self._driver, self._record, self._clock = driver, record, clock

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._driver.poll(*args, **kwargs)
        finally:
            self._record.last_activity = self._clock.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


def stall_limit(poll_interval: float) -> float:
    """How long a bus may go without a stored cycle before it counts as stalled."""
    return max(3 * poll_interval, MIN_STALL)


@dataclass
class BusHealth:
    """Counters and the last outcome of one bus (since the daemon started)."""

    name: str
    port: str
    poll_interval: float
    started: float  # monotonic time the daemon started (progress is measured from it)
    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    cycles: int = 0
    failures: int = 0  # cycles that failed in a row
    last_progress: float | None = None  # monotonic time of the last stored cycle
    last_activity: float | None = None  # monotonic time a meter poll last finished
    last_success: datetime | None = None  # wall time of the last stored cycle
    last_duration: float | None = None  # seconds the last cycle took
    last_error: str | None = None
    offline: set[str] = field(default_factory=set)
    reported: str = OK  # the state last logged

    @property
    def limit(self) -> float:
        return stall_limit(self.poll_interval)

    def state(self, now: float) -> str:
        """Stalled when neither a stored cycle nor, within a long cycle, a finished meter
        poll is more recent than the limit (a cycle of a thousand meters may outlast three
        poll intervals and still be making progress)."""
        since = max(t for t in (self.started, self.last_progress, self.last_activity)
                    if t is not None)
        if now - since > self.limit:
            return STALLED
        if self.failures or self.offline:
            return DEGRADED
        return OK

    def cycle_stored(self, online: dict[str, bool], duration: float, now: float,
                     wall: datetime) -> None:
        """A cycle was polled and stored; `online` says which meters answered."""
        if self.failures:
            log.info("bus %s: polling again after %d failed cycle(s)", self.name,
                     self.failures)
        self.cycles += 1
        self.failures = 0
        if not online or any(online.values()):
            self.last_error = None
        self.requests += len(online)
        answered = sum(online.values())
        self.replies += answered
        self.timeouts += len(online) - answered
        self.last_progress, self.last_success, self.last_duration = now, wall, duration
        offline = {meter for meter, ok in online.items() if not ok}
        if offline and offline != self.offline and len(offline) == len(online):
            problem = port_problem(self.port)
            if problem is not None:
                self.last_error = problem
            log.error("bus %s: no meter answered (%d meter(s)): %s", self.name, len(online),
                      problem or f"{self.port}: check wiring, baud rate and parity")
        elif len(offline - self.offline) > 0:
            log.warning("bus %s: %d meter(s) stopped answering: %s", self.name,
                        len(offline - self.offline), _some(offline - self.offline))
        if self.offline - offline:
            log.info("bus %s: %d meter(s) answer again: %s", self.name,
                     len(self.offline - offline), _some(self.offline - offline))
        self.offline = offline

    def cycle_failed(self, error: BaseException, port_error: bool, duration: float) -> None:
        """A cycle raised: nothing of it was stored."""
        text = f"{type(error).__name__}: {error}" if not str(error) else str(error)
        self.failures += 1
        self.last_duration = duration
        if text != self.last_error:  # once per distinct error, not once per poll
            expected = _expected(error)
            level = logging.ERROR if port_error or not expected else logging.WARNING
            log.log(level, "bus %s (%s): poll cycle failed: %s", self.name, self.port, text,
                    exc_info=None if expected else error)  # a bug: where it happened
        self.last_error = text

    def check(self, now: float) -> str:
        """The current state, logging a change of state once."""
        state = self.state(now)
        if state != self.reported:
            if state == STALLED:
                log.error("bus %s (%s): stalled, no progress for %.0f s (limit %.0f s)%s",
                          self.name, self.port, now - (self.last_progress or self.started),
                          self.limit, f": {self.last_error}" if self.last_error else "")
            elif self.reported == STALLED:
                log.warning("bus %s: no longer stalled (%s)", self.name, state)
            self.reported = state
        return state

    def summary(self, now: float) -> dict[str, Any]:
        return {"bus": self.name, "state": self.state(now), "requests": self.requests,
                "replies": self.replies, "timeouts": self.timeouts, "cycles": self.cycles,
                "failed_cycles_in_a_row": self.failures, "offline": len(self.offline),
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "poll_duration": (round(self.last_duration, 3)
                                  if self.last_duration is not None else None),
                "last_error": self.last_error}


def port_problem(port: str) -> str | None:
    """What is wrong with a serial device path, if anything: missing, not a character
    device, or not readable and writable by this user (a URL such as socket:// is not
    checked).  `config check` asks the same before the daemon starts."""
    import os
    import stat

    if "://" in port:
        return None
    try:
        mode = os.stat(port).st_mode
    except FileNotFoundError:
        return f"port {port} does not exist (adaptor unplugged, or the name changed?)"
    except OSError as exc:
        return f"port {port}: {exc.strerror}"
    if not stat.S_ISCHR(mode):
        return f"port {port} is not a serial device"
    if not os.access(port, os.R_OK | os.W_OK):
        return (f"port {port}: permission denied (the agent's user needs the group of the "
                "device, e.g. dialout)")
    return None


def live_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The live part of a bus summary that goes beside the stored day's counts (whose
    `requests`, `replies` and `success_rate` cover the last day, not the time since start)."""
    return {k: v for k, v in summary.items() if k not in ("bus", "requests", "replies")}


def _expected(error: BaseException) -> bool:
    from edge_agent.errors import EXPECTED_ERRORS

    return isinstance(error, EXPECTED_ERRORS)


def _some(meters: set[str], shown: int = 5) -> str:
    names = sorted(meters)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# -- events into the journal ------------------------------------------------------------------
#: Event severities (the contract's) to journald priorities via logging levels; relay
#: actions are notices (5) so `journalctl -p notice` lists every trip and close.
SEVERITY_LEVEL = {"critical": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
NOTICE_EVENTS = {"relay_tripped", "relay_closed", "keep_power_on", "keep_power_off",
                 "technician_relay", "meter_deactivated", "meter_reactivated"}
events_log = logging.getLogger("edge_agent.events")


def journal_event(row: dict[str, Any]) -> None:
    """One stored event as one journal line: `<4>edge_agent.events: meter_offline ...`."""
    level = SEVERITY_LEVEL.get(row.get("severity", "info"), logging.INFO)
    if row.get("type") in NOTICE_EVENTS and level < NOTICE:
        level = NOTICE
    detail = row.get("detail") or {}
    text = " ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, ""))
    who = " ".join(f"{k} {row[k]}" for k in ("meter", "account") if row.get(k))
    events_log.log(level, "%s %s%s", row.get("type"), who, f" ({text})" if text else "")


def overall(states: list[str]) -> str:
    """The worst of the bus states (no bus: ok)."""
    return max(states, key=STATES.index, default=OK)
