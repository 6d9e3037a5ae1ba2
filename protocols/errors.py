"""The errors of `protocols/`: bytes that are not a frame, replies that are not the answer.

`protocols/` knows bytes and meter semantics only, so it owns its errors and imports nothing
from `edge_agent`.  The agent's own tree (`edge_agent/errors.py`) builds on these: its meter
errors subclass `MeterError`, and the CLI treats every `ProtocolError` like an agent error.

    ProtocolError
    ├── FrameError           a byte sequence is not a valid frame (`fault` names what)
    ├── RequestError         a request that must not be sent (`field` names what); a ValueError
    ├── MeterError           a meter answered, but not with what was asked for
    │   └── MeterAbnormalReply   the meter said no (`errors` names the error bits)
    └── RegisterMapError     a Modbus register map file is invalid or unknown
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error `protocols/` raises on purpose."""


class FrameError(ProtocolError):
    """A byte sequence is not a valid frame; `fault` names what is wrong."""

    def __init__(self, fault: str, detail: str) -> None:
        self.fault = fault
        super().__init__(f"{fault}: {detail}")


class RequestError(ProtocolError, ValueError):
    """A request the agent refuses to build (it would be harmful or meaningless on the bus).

    `field` names the offending part, e.g. `validity` for a relay command that has already
    expired or `address` for a write-address to the wildcard or broadcast address.
    """

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(f"{field}: {detail}")


class MeterError(ProtocolError):
    """A meter answered, but not with what was asked for."""


class MeterAbnormalReply(MeterError):
    """The meter answered with an abnormal (error) reply; `errors` names the error bits."""

    def __init__(self, address: str, function: str, errors: list[str]) -> None:
        self.address = address
        self.errors = errors
        super().__init__(
            f"meter {address} refused {function}: {', '.join(errors) or 'unspecified error'}"
        )


class RegisterMapError(ProtocolError):
    """A Modbus register map is invalid or unknown; a configuration mistake (exit 2)."""
