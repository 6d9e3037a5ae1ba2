"""The one exception hierarchy of edge-agent.

Every error a technician or an integrator can see derives from `EdgeAgentError` and carries a
message that names the cause.  The CLI maps them to exit codes: `ConfigError` and `UsageError`
exit 2, everything else exits 1.  This module imports nothing, so `protocols/` can use it
without depending on the rest of the agent.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class FrameError(EdgeAgentError):
    """A byte sequence is not a valid frame; `fault` names what is wrong."""

    def __init__(self, fault: str, detail: str) -> None:
        self.fault = fault
        super().__init__(f"{fault}: {detail}")


class MeterError(EdgeAgentError):
    """A meter answered, but not with what was asked for."""


class MeterAbnormalReply(MeterError):
    """The meter answered with an abnormal (error) reply; `errors` names the error bits."""

    def __init__(self, address: str, function: str, errors: list[str]) -> None:
        self.address = address
        self.errors = errors
        super().__init__(
            f"meter {address} refused {function}: {', '.join(errors) or 'unspecified error'}"
        )


class RelayUnsupported(MeterError):
    """The meter (or its protocol) has no remote relay control."""


class MeterTimeout(MeterError):
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
