"""Head-end commands: parse and verify a signed envelope before anything happens.

Order of checks (the first failure is the reason given): JSON, envelope shape, command shape,
signature (by `kid`), target gateway, validity window (with the configured clock skew), replay
(the `id` already seen, remembered durably), type, arguments.  A command that fails changes
nothing.  See docs/mqtt.md for each type's arguments and result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from edge_agent.errors import CommandRejected
from edge_agent.headend.keys import KeyRing
from edge_agent.prepaid.money import parse_decimal

RELAY_ACTIONS = ("trip", "close", "keep_power_on", "keep_power_off")
ADDRESS = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class Command:
    id: str
    type: str
    gw: str
    issued_at: datetime
    expires_at: datetime
    args: dict[str, Any]
    kid: str


def _text(args: dict[str, Any], key: str, pattern: str = r"^.{1,128}$") -> str:
    value = args.get(key)
    if not isinstance(value, str) or not re.match(pattern, value):
        raise CommandRejected(f"malformed: args.{key} must be a string matching {pattern}")
    return value


def _money(args: dict[str, Any], key: str, positive: bool) -> Decimal:
    value = args.get(key)
    if not isinstance(value, str):
        raise CommandRejected(f"malformed: args.{key} must be a decimal string, not {value!r}")
    try:
        amount = parse_decimal(value, f"args.{key}", places=4)
    except ValueError as exc:
        raise CommandRejected(f"malformed: {exc}") from None
    if positive and amount <= 0:
        raise CommandRejected(f"malformed: args.{key} must be positive")
    return amount


def _meter(args: dict[str, Any]) -> str:
    return _text(args, "meter", r"^\d{12}$")


def validate_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Check a command's arguments; return them normalised (decimals parsed)."""
    if kind == "topup":
        return {"account": _text(args, "account"), "amount": _money(args, "amount", True),
                "txn_id": _text(args, "txn_id")}
    if kind == "adjust":
        return {"account": _text(args, "account"), "amount": _money(args, "amount", False),
                "txn_id": _text(args, "txn_id"),
                "reason": str(args.get("reason", ""))[:500]}
    if kind == "relay":
        action = args.get("action")
        if action not in RELAY_ACTIONS:
            raise CommandRejected(f"malformed: args.action must be one of "
                                  f"{', '.join(RELAY_ACTIONS)}")
        return {"meter": _meter(args), "action": action}
    if kind == "set_tariff":
        return {"tariff_id": _text(args, "tariff_id", r"^[A-Za-z0-9_.-]{1,64}$"),
                "body": _text(args, "body", r"^[\s\S]{1,65536}$")}
    if kind == "assign_tariff":
        return {"meter": _meter(args), "tariff_id": _text(args, "tariff_id")}
    if kind == "set_policy":
        policy = args.get("policy")
        if not isinstance(policy, dict) or not policy:
            raise CommandRejected("malformed: args.policy must be a table of policy settings")
        return {"policy": policy}
    if kind == "add_meter":
        out = {"meter": _meter(args), "bus": _text(args, "bus"),
               "account": _text(args, "account"), "tariff": _text(args, "tariff"),
               "initial_kwh": _money(args, "initial_kwh", False)}
        multiplier = args.get("multiplier", 1)
        if not isinstance(multiplier, int) or isinstance(multiplier, bool) or multiplier < 1:
            raise CommandRejected("malformed: args.multiplier must be a whole number >= 1")
        out["multiplier"] = multiplier
        for flag in ("keep_power", "allowance"):
            if not isinstance(args.get(flag, False), bool):
                raise CommandRejected(f"malformed: args.{flag} must be true or false")
            out[flag] = args.get(flag, False)
        return out
    if kind == "remove_meter":
        return {"meter": _meter(args)}
    if kind == "read":
        quantities = args.get("quantities", ["energy"])
        if not isinstance(quantities, list) or not all(isinstance(q, str) for q in quantities):
            raise CommandRejected("malformed: args.quantities must be a list of names")
        return {"meter": _meter(args), "quantities": quantities}
    if kind == "sync":
        ids = args.get("ids")
        since = args.get("since_seq", 0)
        if ids is not None and (not isinstance(ids, list)
                                or not all(isinstance(i, str) for i in ids)):
            raise CommandRejected("malformed: args.ids must be a list of ledger entry ids")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise CommandRejected("malformed: args.since_seq must be a whole number >= 0")
        return {"ids": ids, "since_seq": since, "account": args.get("account")}
    if kind == "ping":
        return {}
    raise CommandRejected(f"unknown command type {kind!r}")


COMMAND_TYPES = ("topup", "adjust", "relay", "set_tariff", "assign_tariff", "set_policy",
                 "add_meter", "remove_meter", "read", "sync", "ping")


def _time(cmd: dict[str, Any], key: str) -> datetime:
    value = cmd.get(key)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CommandRejected(f"malformed: cmd.{key} {value!r} is not an ISO time") from None
    if moment.tzinfo is None:
        raise CommandRejected(f"malformed: cmd.{key} must carry a time zone (Z)")
    return moment


def command_id_of(payload: bytes) -> str | None:
    """The command id, if one can be read at all (for the result of a refused command)."""
    try:
        cmd = json.loads(payload).get("cmd", {})
        value = cmd.get("id")
        return value if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def verify(payload: bytes, keys: KeyRing, gateway: str, now: datetime, skew: timedelta,
           seen: Any) -> Command:
    """Verify an envelope; `seen(id) -> bool` answers whether a command id was already used."""
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandRejected(f"malformed: not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise CommandRejected("malformed: the envelope must be a JSON object")
    cmd, kid, sig = envelope.get("cmd"), envelope.get("kid"), envelope.get("sig")
    if not isinstance(cmd, dict):
        raise CommandRejected("malformed: cmd must be an object")
    if sig is None or kid is None:
        raise CommandRejected("unsigned: kid and sig are required")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise CommandRejected("malformed: kid and sig must be strings")
    for key in ("id", "type", "gw"):
        if not isinstance(cmd.get(key), str) or not cmd.get(key):
            raise CommandRejected(f"malformed: cmd.{key} must be a non-empty string")
    if not isinstance(cmd.get("args", {}), dict):
        raise CommandRejected("malformed: cmd.args must be an object")
    issued, expires = _time(cmd, "issued_at"), _time(cmd, "expires_at")
    keys.verify(kid, cmd, sig)
    if cmd["gw"] != gateway:
        raise CommandRejected(f"for another gateway ({cmd['gw']!r}, this is {gateway!r})")
    if now > expires + skew:
        raise CommandRejected(f"expired at {expires.isoformat()}")
    if issued > now + skew:
        raise CommandRejected(f"not yet valid: issued at {issued.isoformat()}, "
                              f"gateway time {now.isoformat()}")
    if seen(cmd["id"]):
        raise CommandRejected(f"replayed: command id {cmd['id']!r} was already used")
    if cmd["type"] not in COMMAND_TYPES:
        raise CommandRejected(f"unknown command type {cmd['type']!r}")
    args = validate_args(cmd["type"], cmd.get("args", {}))
    return Command(cmd["id"], cmd["type"], cmd["gw"], issued, expires, args, kid)
