"""Carry out verified head-end commands; answer every command on `cmd/result`.

Runs on its own thread, fed by the MQTT link's queue with (payload, ack) pairs.  The command
table (`commands.COMMANDS`) names the operation (`runtime/operations.py`) for each type; this
module only verifies, dispatches, and stores.  Exactly once: the command id, the operation's
database effect and the answer are written in ONE transaction on the processing thread, and
only then is the broker's delivery acknowledged (manual ack), so a crash at any point either
leaves nothing (the broker redelivers) or everything (a redelivery is answered with the stored
result again).  A refused command (malformed, unknown meter, ...) is `rejected`, changes
nothing and does not use up its id; one that could not be carried out (a meter did not answer)
is `failed`, and its id is not used up either.

Bad signatures are counted, not answered one event each: the first of an hour raises a
`command_auth_failures` event, later ones are summed into the next (a forged-command campaign
is visible, the outbox does not fill with it, and the real head end is never locked out).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from edge_agent.errors import (
    EXPECTED_ERRORS,
    CommandRejected,
    ConfigError,
    Conflict,
    Malformed,
    NotFound,
    UsageError,
)
from edge_agent.headend.commands import (
    COMMANDS,
    MAX_PAYLOAD,
    Command,
    command_id_of,
    command_type_of,
    cut,
    read_envelope,
    verify,
)
from edge_agent.headend.keys import KeyRing
from edge_agent.prepaid.records import Event
from edge_agent.runtime.operations import OPERATIONS, Context, Plan

log = logging.getLogger(__name__)

#: Errors that mean "refused, nothing changed" (the rest of EXPECTED_ERRORS mean "failed").
REFUSALS = (CommandRejected, NotFound, Conflict, Malformed, ConfigError, UsageError)
AUTH_FAILURES = ("bad signature", "unknown key id", "signature is not base64")
AUTH_WINDOW = timedelta(hours=1)
Ack = Callable[[], None]


class CommandHandler:
    def __init__(self, agent: Any, keys: KeyRing, inbox: queue.Queue[Any]) -> None:
        self.agent = agent
        self.keys = keys
        self.inbox = inbox
        self.max_payload = getattr(agent.config.mqtt, "max_payload", MAX_PAYLOAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._auth_count = 0
        self._auth_since: datetime | None = None
        self._auth_last: dict[str, str] = {}

    def start(self) -> None:
        self._thread.start()

    def reload(self) -> None:
        """SIGHUP: pick up head-end keys installed since the start."""
        self.keys.reload()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(b"")
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.inbox.get(timeout=60)
            except queue.Empty:
                self._flush_auth_failures(self.agent.clock.now(), force=False)
                continue
            if self._stop.is_set():
                break
            payload, ack = item if isinstance(item, tuple) else (item, None)
            try:
                self.handle(payload)
            except Exception:  # the answer could not be stored: no ack, the broker redelivers
                log.exception("command handler failed on a payload")
                continue
            if ack is not None:
                ack()

    # -- one command ----------------------------------------------------------------------
    def handle(self, payload: bytes) -> dict[str, Any]:
        """Verify, carry out and answer one command; returns the answer stored."""
        agent = self.agent
        now = agent.clock.now()
        skew = timedelta(seconds=agent.config.keys.clock_skew)
        try:
            command = verify(payload, self.keys, agent.config.gateway_id, now, skew,
                             self.max_payload)
        except CommandRejected as exc:
            done = self._done_before(payload, now, skew)
            if done is not None:  # carried out in time, delivered again late: same answer
                return self._again(*done, now)
            return self._refused(payload, exc.reason, now)
        seen = agent.store.command_record(command.id)
        if seen is not None:
            return self._again(command, seen, now)
        try:
            return self._carry_out(command, now)
        except REFUSALS as exc:
            return self._answer(command, "rejected", _reason(exc), None, now)
        except (*EXPECTED_ERRORS, TimeoutError) as exc:
            return self._answer(command, "failed", str(exc) or type(exc).__name__, None, now)
        except Exception as exc:  # a bug must still get an answer (and a log with its trace)
            log.exception("command %s (%s) failed", command.id, command.type)
            return self._answer(command, "failed", f"internal error ({type(exc).__name__})",
                                None, now)

    def _carry_out(self, command: Command, now: datetime) -> dict[str, Any]:
        kind = COMMANDS[command.type]
        ctx = Context(f"headend:{command.kid}", command.id, now)
        plan: Plan = OPERATIONS[kind.operation](self.agent, command.args, ctx)
        body = self._commit(command, plan, now)
        if plan.after is not None:
            plan.after()
        log.info("command %s (%s): ok", command.id, command.type)
        return body

    def _commit(self, command: Command, plan: Plan, now: datetime) -> dict[str, Any]:
        """The effect, the id and the answer: one transaction on the processing thread."""
        store = self.agent.store

        def write() -> dict[str, Any]:
            with store.transaction():
                result = plan.apply() if plan.apply is not None else plan.result
                body = _body(command.id, command.type, "ok", "", result)
                store.remember_command(command.id, "ok", now, command.digest,
                                       json.dumps(body, default=str))
                store.enqueue("cmd_result", body)
            return body

        return self.agent.on_processor(write)

    def _done_before(self, payload: bytes, now: datetime, skew: timedelta
                     ) -> tuple[Command, tuple[str | None, str | None]] | None:
        """A command refused for its time (expired, not yet valid) that this gateway carried
        out before (the broker redelivers what was not acknowledged, however late): the
        command and its stored record; None otherwise."""
        try:
            command = verify(payload, self.keys, self.agent.config.gateway_id, now, skew,
                             self.max_payload, check_time=False)
        except CommandRejected:
            return None
        seen = self.agent.store.command_record(command.id)
        if seen is None or seen[0] != command.digest or not seen[1]:
            return None
        return command, seen

    def _again(self, command: Command, seen: tuple[str | None, str | None],
               now: datetime) -> dict[str, Any]:
        """A command id already used: the same command again gets the stored answer again;
        another command under a used id is refused."""
        digest, stored = seen
        if digest == command.digest and stored:
            body = json.loads(stored)
            self._write([], body)
            log.info("command %s redelivered: answered again", command.id)
            return body
        return self._refused_command(command.id, command.type,
                                     f"replayed: command id {cut(command.id)!r} was already used",
                                     now)

    # -- answers --------------------------------------------------------------------------
    def _answer(self, command: Command, status: str, reason: str, result: Any,
                now: datetime) -> dict[str, Any]:
        log.info("command %s (%s): %s %s", command.id, command.type, status, reason)
        if status == "rejected":
            return self._refused_command(command.id, command.type, reason, now)
        body = _body(command.id, command.type, status, reason, result)
        self._write([], body)
        return body

    def _refused(self, payload: bytes, reason: str, now: datetime) -> dict[str, Any]:
        envelope = read_envelope(payload, self.max_payload)
        cmd_id, kind = command_id_of(envelope), command_type_of(envelope)
        if reason.startswith(AUTH_FAILURES):
            kid = envelope.get("kid") if isinstance(envelope, dict) else None
            self._auth_failure(now, cut(kid), reason)
            body = _body(cmd_id, kind, "rejected", reason, None)
            self._write(self._flush_auth_failures(now, force=False, write=False), body)
            return body
        return self._refused_command(cmd_id, kind, reason, now)

    def _refused_command(self, cmd_id: str | None, kind: str | None, reason: str,
                         now: datetime) -> dict[str, Any]:
        body = _body(cmd_id, kind, "rejected", reason, None)
        event = Event("command_rejected", "warning", now, None, None,
                      {"cmd_id": cut(cmd_id) if cmd_id else None, "reason": reason[:300]})
        self._write([event], body)
        return body

    def _write(self, events: list[Event], body: dict[str, Any]) -> None:
        store = self.agent.store

        def write() -> None:
            with store.transaction():
                store.record_events(events)
                store.enqueue("cmd_result", body)

        self.agent.on_processor(write)

    # -- forged-command campaigns ---------------------------------------------------------
    def _auth_failure(self, now: datetime, kid: str, reason: str) -> None:
        self._auth_count += 1
        self._auth_last = {"kid": kid, "reason": reason}

    def _flush_auth_failures(self, now: datetime, force: bool,
                             write: bool = True) -> list[Event]:
        """One `command_auth_failures` event per hour at most, carrying the count."""
        if not self._auth_count:
            return []
        if not force and self._auth_since is not None and now - self._auth_since < AUTH_WINDOW:
            return []
        event = Event("command_auth_failures", "warning", now, None, None,
                      {"count": self._auth_count, "last_kid": self._auth_last.get("kid"),
                       "last_reason": self._auth_last.get("reason"),
                       "since": (self._auth_since or now).isoformat()})
        self._auth_count, self._auth_since = 0, now
        if write:
            from edge_agent.runtime.operations import record_events

            record_events(self.agent, [event])
        return [event]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CommandRejected):
        return exc.reason
    if isinstance(exc, Malformed):
        return f"malformed: {exc}"
    return str(exc) or type(exc).__name__


def _body(cmd_id: str | None, kind: str | None, status: str, reason: str,
          result: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"cmd_id": cmd_id, "status": status, "reason": reason,
                            "result": result}
    if kind is not None:
        body["type"] = kind
    return body


__all__ = ["CommandHandler"]
