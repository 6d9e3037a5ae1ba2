"""Head-end commands: parse and verify a signed envelope before anything happens.

Parsing is strict and bounded (docs/mqtt.md, "Strict parsing"): the payload size is checked
before parsing, nesting is limited, a duplicated key anywhere refuses the message (a first-wins
and a last-wins reader must never disagree on an amount), and every string is matched whole
(`fullmatch`, so `"pay-1\\n"` is not `"pay-1"`).  Order of checks (the first failure is the
reason given): size, JSON, envelope shape, command shape, signature (by `kid`), target gateway,
validity window (with the configured clock skew), type, arguments.  The replay check is the
handler's (a redelivery of the same signed command gets its stored result again).  A command
that fails changes nothing and does not use up its id.

`COMMANDS` is the one table of command types: name -> argument spec -> operation (the use
case in `edge_agent.runtime.operations` that carries it out).  The argument specs implement
`docs/schemas/args/<type>.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from edge_agent.config import PHASES, field_value_problem
from edge_agent.errors import CommandRejected, Malformed
from edge_agent.headend.keys import KeyRing, canonical
from edge_agent.prepaid.vocabulary import CLOSE_MODES, RelayOrder

MAX_PAYLOAD = 64 * 1024  # bytes; `[mqtt] max_payload` overrides
MAX_DEPTH = 16  # nesting of objects and arrays in one command
#: The largest amount a command may carry: the ledger keeps integer micro-yuan in SQLite's
#: signed 64-bit integers (9.2e12 yuan); 1e9 per entry leaves room for any sum of them.
MAX_AMOUNT = Decimal(10) ** 9
ID_CUT = 64  # characters of an unreadable or oversized id kept in an event
VERSION = 1

ID = re.compile(r"[!-~]{1,64}")
TARIFF_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MONEY = re.compile(r"-?[0-9]{1,13}(\.[0-9]{1,4})?")
KWH = re.compile(r"[0-9]{1,13}(\.[0-9]{1,4})?")
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
SIG = re.compile(r"[A-Za-z0-9+/]{1,200}={0,2}")
HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATA_ID = re.compile(r"(0x)?([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})")
SHARE = re.compile(r"(0(\.[0-9]{1,4})?|1(\.0{1,4})?)")
RELAY_ACTIONS = tuple(o.value for o in RelayOrder)
READ_ALIASES = ("energy", "voltage", "current", "power", "status", "relay")
ENVELOPE_KEYS = frozenset({"cmd", "kid", "sig"})
# The longest a command may be valid.  Command ids are remembered for `[retention]
# commands_seen_days` (35 by default): a command must expire well before its id is forgotten,
# or it could be replayed after that.
MAX_LIFETIME = timedelta(days=7)
CMD_KEYS = frozenset({"v", "id", "type", "gw", "issued_at", "expires_at", "args"})


@dataclass(frozen=True)
class Command:
    id: str
    type: str
    gw: str
    issued_at: datetime
    expires_at: datetime
    args: dict[str, Any]
    kid: str
    digest: str = ""  # sha-256 of the signed `cmd`: tells a redelivery from a reused id


# -- bounded JSON ---------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Malformed(f"duplicate key {cut(key)!r}")
        out[key] = value
    return out


def _depth_ok(text: str, limit: int) -> bool:
    """Nesting of `{`/`[` outside strings, counted before `json` recurses into it."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            if depth > limit:
                return False
        elif char in "}]":
            depth -= 1
    return True


def _no_constant(name: str) -> Any:
    raise Malformed(f"{name} is not JSON")


def parse_json(payload: bytes, max_payload: int = MAX_PAYLOAD,
               max_depth: int = MAX_DEPTH) -> Any:
    """JSON with a size limit (checked first), a nesting limit and duplicate keys refused."""
    if len(payload) > max_payload:
        raise Malformed(f"payload larger than the limit of {max_payload} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None
    if not _depth_ok(text, max_depth):
        raise Malformed(f"nested deeper than {max_depth}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant)
    except ValueError as exc:
        raise Malformed(f"not JSON ({exc})") from None


def cut(value: object, limit: int = ID_CUT) -> str:
    """An id as it may appear in an event or a log: printable, at most `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


# -- argument specs ---------------------------------------------------------------------------
def _bad(name: str, what: str) -> Malformed:
    return Malformed(f"args.{name} must be {what}")


@dataclass(frozen=True)
class Text:
    pattern: re.Pattern[str] = ID
    what: str = "1-64 printable ASCII characters without spaces"

    def parse(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise _bad(name, self.what)
        return value


@dataclass(frozen=True)
class FreeText:
    max_length: int
    min_length: int = 0

    def parse(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not self.min_length <= len(value) <= self.max_length:
            raise _bad(name, f"a string of {self.min_length}-{self.max_length} characters")
        return value


@dataclass(frozen=True)
class Money:
    """Yuan as an ASCII decimal string with up to 4 decimals, within the ledger's range."""

    positive: bool = False
    pattern: re.Pattern[str] = MONEY

    def parse(self, name: str, value: Any) -> Decimal:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise _bad(name, "a decimal string such as \"10.00\" (up to 4 decimals)")
        amount = Decimal(value)
        if abs(amount) > MAX_AMOUNT:
            raise _bad(name, f"at most {MAX_AMOUNT} in size")
        if self.positive and amount <= 0:
            raise _bad(name, "positive")
        return amount


@dataclass(frozen=True)
class Integer:
    minimum: int
    maximum: int

    def parse(self, name: str, value: Any) -> int:
        if (not isinstance(value, int) or isinstance(value, bool)
                or not self.minimum <= value <= self.maximum):
            raise _bad(name, f"a whole number from {self.minimum} to {self.maximum}")
        return value


@dataclass(frozen=True)
class Flag:
    def parse(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, "true or false")
        return value


@dataclass(frozen=True)
class OrNull:
    """The inner spec, or JSON null (meaning "none": e.g. back to the default policy)."""

    inner: Any

    def parse(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner.parse(name, value)


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def parse(self, name: str, value: Any) -> str:
        if value not in self.choices or not isinstance(value, str):
            raise _bad(name, "one of " + ", ".join(self.choices))
        return value


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_items: int = 1
    max_items: int = 32

    def parse(self, name: str, value: Any) -> list[Any]:
        if not isinstance(value, list) or not self.min_items <= len(value) <= self.max_items:
            raise _bad(name, f"a list of {self.min_items}-{self.max_items} items")
        return [self.item.parse(f"{name}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Quantity:
    """A catalogue name, an alias or a data identifier in hex (the driver checks the name)."""

    def parse(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not (
                value in READ_ALIASES or re.fullmatch(r"[a-z][a-z0-9_]{0,63}", value)
                or DATA_ID.fullmatch(value)):
            raise _bad(name, "a reading name, an alias or a data identifier")
        return value


@dataclass(frozen=True)
class FieldData:
    """A meter's field data (lat, lon, pole, customer_class), by the rule of the `[[meter]]`
    keys of the same name (`config.field_value_problem`)."""

    def parse(self, name: str, value: Any) -> Any:
        problem = field_value_problem(name, value)
        if problem is not None:
            raise Malformed(f"args.{name}: {problem}")
        return value


def _lat_and_lon(args: dict[str, Any]) -> None:
    if (args.get("lat") is None) != (args.get("lon") is None):
        raise Malformed("args.lat and args.lon: give both or neither")


@dataclass(frozen=True)
class Table:
    """A nested object with its own fields (set_policy's `policy`)."""

    fields: tuple[Arg, ...]
    min_items: int = 1

    def parse(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) < self.min_items:
            raise _bad(name, "a table of settings")
        ArgSpec(self.fields, prefix=f"{name}.").parse(value)
        return value  # checked; kept as sent (it is stored and merged with the file's table)


@dataclass(frozen=True)
class Arg:
    name: str
    spec: Any
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class ArgSpec:
    """The arguments of one command type: known names only, each parsed by its spec."""

    fields: tuple[Arg, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None
    prefix: str = ""

    def parse(self, args: dict[str, Any]) -> dict[str, Any]:
        known = {a.name for a in self.fields}
        unknown = sorted(set(args) - known)
        if unknown:
            raise Malformed(f"unknown argument args.{self.prefix}{cut(unknown[0])}")
        out: dict[str, Any] = {}
        for arg in self.fields:
            if arg.name in args:
                out[arg.name] = arg.spec.parse(self.prefix + arg.name, args[arg.name])
            elif arg.required:
                raise Malformed(f"args.{self.prefix}{arg.name} is required")
            elif arg.default is not None or self.prefix == "":
                out[arg.name] = arg.default
        if self.check is not None:
            self.check(out)
        return out


def _force_only_with_trip(args: dict[str, Any]) -> None:
    if args.get("force") is not None and args["action"] != "trip":
        raise Malformed("args.force is allowed with action trip only")
    args["force"] = bool(args.get("force"))


def _ids_or_since(args: dict[str, Any]) -> None:
    if args.get("ids") is not None and args.get("since_seq") is not None:
        raise Malformed("args.ids and args.since_seq: give one, not both")
    if args.get("since_seq") is None:
        args["since_seq"] = 0


POLICY_ARGS = (
    Arg("alert_levels", ListOf(Money(), 0, 16), False),
    Arg("alert_days_left", Money(), False),
    Arg("usage_window_days", Integer(1, 90), False),
    Arg("overdraft", Money(), False),
    Arg("restore_level", Money(), False),
    Arg("alarm_grace_minutes", Integer(0, 100000), False),
    Arg("close_mode", OneOf(tuple(m.value for m in CLOSE_MODES)), False),
    Arg("protected_hours", ListOf(Text(HHMM, "HH:MM-HH:MM"), 0, 48), False),
    Arg("holidays", ListOf(Text(DATE, "a date YYYY-MM-DD"), 0, 366), False),
    Arg("no_cutoff", Flag(), False),
    Arg("max_trip_share", Text(SHARE, "a share from 0 to 1 as a decimal string"), False),
    Arg("trip_guard_min", Integer(0, 100000), False),
    Arg("relay_confirm_attempts", Integer(1, 20), False),
    Arg("relay_backoff_seconds", Integer(0, 60), False),
)
ACCOUNT, TXN, METER = Arg("account", Text()), Arg("txn_id", Text()), Arg("meter", Text())


@dataclass(frozen=True)
class CommandType:
    """One row of the command table.  `operation` names the use case in
    `edge_agent.runtime.operations`; `transactional` operations apply their whole effect in
    the transaction that remembers the command id (money: exactly once)."""

    name: str
    args: ArgSpec
    operation: str
    transactional: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


COMMANDS: dict[str, CommandType] = {c.name: c for c in (
    CommandType("topup", ArgSpec((ACCOUNT, Arg("amount", Money(positive=True)), TXN,
                                  Arg("seq", Integer(1, 2 ** 53 - 1), False))),
                "topup", transactional=True),
    CommandType("adjust", ArgSpec((ACCOUNT, Arg("amount", Money()), TXN,
                                   Arg("reason", FreeText(500), False, "")), ),
                "adjust", transactional=True),
    CommandType("relay", ArgSpec((METER, Arg("action", OneOf(RELAY_ACTIONS)),
                                  Arg("force", Flag(), False)), _force_only_with_trip),
                "relay_order"),
    CommandType("set_tariff", ArgSpec((Arg("tariff_id", Text(TARIFF_ID, "a tariff id")),
                                       Arg("body", FreeText(65536, 1)))),
                "set_tariff", transactional=True),
    CommandType("assign_tariff", ArgSpec((METER, Arg("tariff_id",
                                                     Text(TARIFF_ID, "a tariff id")))),
                "assign_tariff", transactional=True),
    CommandType("set_policy", ArgSpec((Arg("policy", Table(POLICY_ARGS)),)),
                "set_policy", transactional=True),
    CommandType("add_meter", ArgSpec((
        METER, Arg("bus", Text()), ACCOUNT, Arg("tariff", Text(TARIFF_ID, "a tariff id")),
        Arg("initial_kwh", Money(pattern=KWH)), Arg("multiplier", Integer(1, 100000), False, 1),
        Arg("keep_power", Flag(), False, False), Arg("allowance", Flag(), False, False),
        Arg("lat", FieldData(), False), Arg("lon", FieldData(), False),
        Arg("pole", FieldData(), False), Arg("phase", OneOf(PHASES), False),
        Arg("customer_class", FieldData(), False), Arg("behind", Text(), False)),
        _lat_and_lon),
        "add_meter", transactional=True),
    CommandType("remove_meter", ArgSpec((METER,)), "remove_meter", transactional=True),
    CommandType("read", ArgSpec((METER, Arg("quantities", ListOf(Quantity()), False,
                                            ("energy",)))), "read"),
    CommandType("sync", ArgSpec((Arg("since_seq", Integer(0, 2 ** 53 - 1), False),
                                 Arg("ids", ListOf(Text(), 1, 10000), False),
                                 Arg("account", Text(), False)), _ids_or_since),
                "resend", transactional=True),
    CommandType("ping", ArgSpec(), "ping"),
    CommandType("set_account_class", ArgSpec((
        ACCOUNT, Arg("policy_class", OrNull(Text(TARIFF_ID, "a policy class name"))),
        Arg("tier_bonus_kwh", Money(pattern=KWH), False))),
        "set_account_class", transactional=True),
)}

#: The command type names, in the contract's order (docs/schemas/cmd.json).
COMMAND_TYPES = tuple(COMMANDS)


# -- the envelope -----------------------------------------------------------------------------
def _time(cmd: dict[str, Any], key: str) -> datetime:
    value = cmd.get(key)
    if not isinstance(value, str) or not TIME.fullmatch(value):
        raise Malformed(f"cmd.{key} must be a UTC time such as 2026-11-22T10:00:00Z")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Malformed(f"cmd.{key} {value!r} is not a valid time") from None


def command_id_of(envelope: Any) -> str | None:
    """The command id, if one can be read at all (for the result of a refused command)."""
    cmd = envelope.get("cmd") if isinstance(envelope, dict) else None
    value = cmd.get("id") if isinstance(cmd, dict) else None
    return value if isinstance(value, str) and ID.fullmatch(value) else None


def command_type_of(envelope: Any) -> str | None:
    cmd = envelope.get("cmd") if isinstance(envelope, dict) else None
    value = cmd.get("type") if isinstance(cmd, dict) else None
    return value if isinstance(value, str) and value in COMMANDS else None


def _shape(envelope: Any) -> tuple[dict[str, Any], str, str]:
    if not isinstance(envelope, dict):
        raise Malformed("the envelope must be a JSON object")
    unknown = sorted(set(envelope) - ENVELOPE_KEYS)
    if unknown:
        raise Malformed(f"unknown key {cut(unknown[0])!r} in the envelope")
    cmd, kid, sig = envelope.get("cmd"), envelope.get("kid"), envelope.get("sig")
    if not isinstance(cmd, dict):
        raise Malformed("cmd must be an object")
    if sig is None or kid is None:
        raise CommandRejected("unsigned: kid and sig are required")
    if not isinstance(kid, str) or not ID.fullmatch(kid):
        raise Malformed("kid must be an id")
    if not isinstance(sig, str) or not SIG.fullmatch(sig):
        raise Malformed("sig must be base64")
    unknown = sorted(set(cmd) - CMD_KEYS)
    if unknown:
        raise Malformed(f"unknown key {cut(unknown[0])!r} in cmd")
    if cmd.get("v", VERSION) != VERSION or isinstance(cmd.get("v"), bool):
        raise Malformed(f"cmd.v {cut(cmd.get('v'))} is not a version this gateway knows "
                        f"({VERSION})")
    for key in ("id", "gw"):
        if not isinstance(cmd.get(key), str) or not ID.fullmatch(cmd[key]):
            raise Malformed(f"cmd.{key} must be 1-64 printable ASCII characters, no spaces")
    if not isinstance(cmd.get("type"), str):
        raise Malformed("cmd.type must be a string")
    if not isinstance(cmd.get("args", {}), dict):
        raise Malformed("cmd.args must be an object")
    return cmd, kid, sig


def verify(payload: bytes, keys: KeyRing, gateway: str, now: datetime, skew: timedelta,
           max_payload: int = MAX_PAYLOAD, check_time: bool = True) -> Command:
    """Parse and verify an envelope.  Raises `CommandRejected` (its `reason` is what the
    head end reads); `Malformed` is turned into one with the reason `malformed: ...`.
    `check_time=False` leaves out expiry and not-yet-valid (the handler's look for a command
    carried out before, delivered again late)."""
    try:
        envelope = parse_json(payload, max_payload)
        cmd, kid, sig = _shape(envelope)
        issued, expires = _time(cmd, "issued_at"), _time(cmd, "expires_at")
    except Malformed as exc:
        raise CommandRejected(f"malformed: {exc}") from None
    keys.verify(kid, cmd, sig)
    if cmd["gw"] != gateway:
        raise CommandRejected(f"for another gateway ({cut(cmd['gw'])!r}, this is {gateway!r})")
    if check_time and now > expires + skew:
        raise CommandRejected(f"expired at {expires.isoformat()}")
    if expires - issued > MAX_LIFETIME:  # its id must be remembered for as long as it is valid
        raise CommandRejected(f"malformed: valid for longer than {MAX_LIFETIME.days} days "
                              f"(issued_at {issued.isoformat()}, expires_at "
                              f"{expires.isoformat()})")
    if check_time and issued > now + skew:
        raise CommandRejected(f"not yet valid: issued at {issued.isoformat()}, "
                              f"gateway time {now.isoformat()}")
    kind = COMMANDS.get(cmd["type"])
    if kind is None:
        raise CommandRejected(f"unknown command type {cut(cmd['type'])!r}")
    try:
        args = kind.args.parse(cmd.get("args", {}))
    except Malformed as exc:
        raise CommandRejected(f"malformed: {exc}") from None
    digest = hashlib.sha256(canonical(cmd)).hexdigest()
    return Command(cmd["id"], cmd["type"], cmd["gw"], issued, expires, args, kid, digest)


def read_envelope(payload: bytes, max_payload: int = MAX_PAYLOAD) -> Any:
    """The envelope as far as it can be read, for a refusal's answer only (duplicate keys
    allowed here: it names the command id, it never carries out anything); None when even
    that is impossible (too big, too deep, not JSON)."""
    if len(payload) > max_payload:
        return None
    try:
        text = payload.decode("utf-8")
        if not _depth_ok(text, MAX_DEPTH):
            return None
        return json.loads(text, parse_constant=lambda name: None)
    except ValueError:
        return None
