"""The one exception hierarchy of edge-agent.

Every error a technician or an integrator can see derives from `EdgeAgentError` and carries a
message that names the cause.  The CLI maps them to exit codes: `ConfigError` and `UsageError`
exit 2, everything else exits 1.  Frame and meter errors come from `protocols/errors.py`
(which imports nothing of the agent); catch `EXPECTED_ERRORS` to mean either tree.
"""

from __future__ import annotations

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


class RelayUnsupported(MeterError, EdgeAgentError):
    """The meter (or its protocol) has no remote relay control."""


class MeterTimeout(MeterError, EdgeAgentError):
    """A meter did not answer within the timeout, after all retries."""


class BusError(EdgeAgentError):
    """A serial port cannot be opened, or went away."""


class ConfigError(EdgeAgentError):
    """The configuration (or a tariff/policy file) is invalid; the message names key and place."""


class UsageError(EdgeAgentError):
    """A command line was given arguments that cannot work."""


class TariffError(ConfigError):
    """A tariff file is invalid; `problems` lists each error with its location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class StorageError(EdgeAgentError):
    """The database refused an operation (unknown meter, schema too new, ...)."""


class CommandRejected(EdgeAgentError):
    """A head-end command failed verification; nothing was changed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


#: What a caller catches to mean "an error edge-agent or a protocol raised on purpose".
EXPECTED_ERRORS: tuple[type[Exception], ...] = (EdgeAgentError, ProtocolError)
