"""The one exception hierarchy of edge-agent.

Every error a technician or an integrator can see is raised on purpose, by type, with a message
that names the cause; code decides by type (`except UnknownMeter`), never by the message text.
The CLI maps them to exit codes: `ConfigError` and `UsageError` (and their subclasses) exit 2,
everything else exits 1.  Frame and meter errors come from `protocols/errors.py` (which imports
nothing of the agent); catch `EXPECTED_ERRORS` to mean either tree.

    EdgeAgentError
    ├── ConfigError             configuration, tariff or policy invalid      (exit 2)
    │   └── TariffError             a tariff file; `problems` lists each error
    ├── UsageError              arguments that cannot work                   (exit 2)
    │   └── NotOwned                the daemon does not own that port: use it directly
    ├── NotFound                something named does not exist               (exit 1)
    │   ├── UnknownMeter
    │   ├── UnknownAccount
    │   ├── UnknownTariff
    │   └── UnknownBus
    ├── Conflict                it exists already / is in the wrong state    (exit 1)
    ├── Malformed               a message or payload is not what it must be  (exit 1)
    ├── CommandRejected         a head-end command refused; nothing changed
    ├── BusError                a serial port cannot be opened, or went away
    ├── StorageError            the database refused (schema too new, ...)
    ├── MeterTimeout            (also a protocols MeterError) no answer after all retries
    └── RelayUnsupported        (also a protocols MeterError) no remote relay

    protocols.errors.ProtocolError
    ├── FrameError, MeterError (MeterAbnormalReply), RegisterMapError (exit 2)

Each class has a `kind`, a stable short name that crosses process boundaries (the control
socket answers with it, and `from_kind` raises the same type on the CLI's side).
"""

from __future__ import annotations

from typing import ClassVar

from protocols.errors import (
    FrameError,
    MeterAbnormalReply,
    MeterError,
    ProtocolError,
    RegisterMapError,
)

__all__ = [
    "EXPECTED_ERRORS", "FrameError", "MeterAbnormalReply", "MeterError", "ProtocolError",
    "RegisterMapError",
]


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""

    kind: ClassVar[str] = "failed"


class ConfigError(EdgeAgentError):
    """The configuration (or a tariff/policy file) is invalid; the message names key and place."""

    kind = "config"


class TariffError(ConfigError):
    """A tariff file is invalid; `problems` lists each error with its location."""

    kind = "tariff"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class UsageError(EdgeAgentError):
    """A command line (or a control request) was given arguments that cannot work."""

    kind = "usage"


class NotOwned(UsageError):
    """The daemon does not own that port; the CLI may open it directly."""

    kind = "not_owned"


class NotFound(EdgeAgentError):
    """Something a request names does not exist."""

    kind = "not_found"


class UnknownMeter(NotFound):
    kind = "unknown_meter"


class UnknownAccount(NotFound):
    kind = "unknown_account"


class UnknownTariff(NotFound):
    kind = "unknown_tariff"


class UnknownBus(NotFound):
    kind = "unknown_bus"


class UnknownPolicyClass(NotFound):
    kind = "unknown_policy_class"


class Conflict(EdgeAgentError):
    """The thing exists already, or is in a state the operation cannot start from."""

    kind = "conflict"


class Malformed(EdgeAgentError):
    """A message or payload is not what it must be (syntax, types, ranges)."""

    kind = "malformed"


class CommandRejected(EdgeAgentError):
    """A head-end command failed verification; nothing was changed."""

    kind = "rejected"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BusError(EdgeAgentError):
    """A serial port cannot be opened, or went away."""

    kind = "bus"


class StorageError(EdgeAgentError):
    """The database refused an operation (schema too new, ...)."""

    kind = "storage"


class MeterTimeout(MeterError, EdgeAgentError):
    """A meter did not answer within the timeout, after all retries."""

    kind = "meter_timeout"


class RelayUnsupported(MeterError, EdgeAgentError):
    """The meter (or its protocol) has no remote relay control."""

    kind = "relay_unsupported"


#: What a caller catches to mean "an error edge-agent or a protocol raised on purpose".
EXPECTED_ERRORS: tuple[type[Exception], ...] = (EdgeAgentError, ProtocolError)


def kind_of(exc: BaseException) -> str:
    """The stable name of an error's type, for answers that cross a process boundary."""
    return getattr(exc, "kind", "failed") if isinstance(exc, EdgeAgentError) else "failed"


def from_kind(kind: str, message: str) -> EdgeAgentError:
    """The error of that kind (a plain `EdgeAgentError` for kinds this side does not know)."""
    for cls in _all_subclasses(EdgeAgentError):
        if cls.kind == kind and cls not in (TariffError, CommandRejected):
            return cls(message)
    return EdgeAgentError(message)


def _all_subclasses(cls: type[EdgeAgentError]) -> list[type[EdgeAgentError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out
