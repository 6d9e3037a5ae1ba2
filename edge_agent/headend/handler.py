"""Carry out verified head-end commands; answer every command on `cmd/result`.

Runs on its own thread, fed by the MQTT link's queue.  Database writes go through the agent's
processing thread (the single writer); relay orders and on-demand reads go to the meter's bus
worker ahead of routine polling.  A command refused at verification, or naming an unknown
meter, account, bus or tariff, is `rejected` and changes nothing; one that was accepted but
could not be carried out (a meter did not answer) is `failed`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import timedelta
from typing import Any

from edge_agent import __version__
from edge_agent.errors import (
    EXPECTED_ERRORS,
    CommandRejected,
    ConfigError,
    TariffError,
    UnknownAccount,
)
from edge_agent.headend.commands import Command, command_id_of, verify
from edge_agent.headend.keys import KeyRing
from edge_agent.prepaid.money import format_money
from edge_agent.prepaid.policy import parse_policy
from edge_agent.prepaid.records import Event, LedgerEntry
from edge_agent.store import MeterRecord

log = logging.getLogger(__name__)



class CommandHandler:
    def __init__(self, agent: Any, keys: KeyRing, inbox: queue.Queue[bytes]) -> None:
        self.agent = agent
        self.keys = keys
        self.inbox = inbox
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)

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
            payload = self.inbox.get()
            if self._stop.is_set():
                break
            try:
                self.handle(payload)
            except Exception:  # one bad command must not stop the handler; it is logged
                log.exception("command handler failed on a payload")

    # -- one command ----------------------------------------------------------------------
    def handle(self, payload: bytes) -> dict[str, Any]:
        agent = self.agent
        now = agent.clock.now()
        skew = timedelta(seconds=agent.config.keys.clock_skew)
        try:
            command = verify(payload, self.keys, agent.config.gateway_id, now, skew,
                             agent.store.command_seen)
            self._precheck(command)
        except CommandRejected as exc:
            return self._answer(command_id_of(payload), "rejected", exc.reason, None,
                                [Event("command_rejected", "warning", now, None, None,
                                       {"cmd_id": command_id_of(payload),
                                        "reason": exc.reason})])
        agent.on_processor(self._remember, command.id, now)
        try:
            result = getattr(self, f"_do_{command.type}")(command)
            status, reason = "ok", ""
        except CommandRejected as exc:
            result, status, reason = None, "rejected", exc.reason
        except (*EXPECTED_ERRORS, TimeoutError) as exc:
            result, status, reason = None, "failed", str(exc) or type(exc).__name__
        log.info("command %s (%s): %s %s", command.id, command.type, status, reason)
        return self._answer(command.id, status, reason, result, [])

    def _remember(self, command_id: str, now: Any) -> None:
        with self.agent.store.transaction():
            self.agent.store.remember_command(command_id, "accepted", now)

    def _answer(self, cmd_id: str | None, status: str, reason: str, result: Any,
                events: list[Event]) -> dict[str, Any]:
        body = {"cmd_id": cmd_id, "status": status, "reason": reason, "result": result}
        store = self.agent.store

        def write() -> None:
            with store.transaction():
                store.record_events(events)
                store.enqueue("cmd_result", body)

        self.agent.on_processor(write)
        return body

    def _precheck(self, command: Command) -> None:
        """Refuse commands about things this gateway does not have (changes nothing)."""
        store, args = self.agent.store, command.args
        if "meter" in args and command.type != "add_meter":
            record = store.meter(args["meter"])
            if record is None or not record.active:
                raise CommandRejected(f"unknown meter {args['meter']}")
        if command.type in ("topup", "adjust"):
            try:
                store.balance(args["account"])
            except UnknownAccount:
                raise CommandRejected(f"unknown account {args['account']!r}") from None
        if command.type == "assign_tariff" and args["tariff_id"] not in self.agent.tariffs:
            raise CommandRejected(f"unknown tariff {args['tariff_id']!r}")
        if command.type == "add_meter":
            if store.meter(args["meter"]) is not None:
                raise CommandRejected(f"meter {args['meter']} is already registered")
            if args["bus"] not in self.agent.workers:
                raise CommandRejected(f"unknown bus {args['bus']!r}")
            if args["tariff"] not in self.agent.tariffs:
                raise CommandRejected(f"unknown tariff {args['tariff']!r}")

    # -- the command types ----------------------------------------------------------------
    def _money_entry(self, command: Command, kind: str) -> dict[str, Any]:
        args = command.args
        detail = {"cmd": command.id}
        if kind == "adjustment":
            detail["reason"] = args["reason"]
        entry = LedgerEntry(args["txn_id"], args["account"], kind, args["amount"],
                            self.agent.clock.now(), None, detail)
        added = self.agent.apply_entries([entry])
        balance = self.agent.store.balance(args["account"])
        return {"txn_id": args["txn_id"], "applied": bool(added),
                "balance": format_money(balance)}

    def _do_topup(self, command: Command) -> dict[str, Any]:
        return self._money_entry(command, "topup")

    def _do_adjust(self, command: Command) -> dict[str, Any]:
        return self._money_entry(command, "adjustment")

    def _do_relay(self, command: Command) -> dict[str, Any]:
        meter, order = command.args["meter"], command.args["action"]
        return self.agent.operator_relay(meter, order, actor=f"headend:{command.kid}",
                                         reason=f"command {command.id}")

    def _do_set_tariff(self, command: Command) -> dict[str, Any]:
        try:
            self.agent.set_tariff(command.args["tariff_id"], command.args["body"])
        except TariffError as exc:
            raise CommandRejected("invalid tariff: " + "; ".join(exc.problems)) from None
        return {"tariff_id": command.args["tariff_id"]}

    def _do_assign_tariff(self, command: Command) -> dict[str, Any]:
        meter, tariff = command.args["meter"], command.args["tariff_id"]

        def assign() -> None:
            self.agent.store.set_meter_tariff(meter, tariff)
            self.agent.processor.reload()

        self.agent.on_processor(assign)
        return {"meter": meter, "tariff_id": tariff}

    def _do_set_policy(self, command: Command) -> dict[str, Any]:
        agent = self.agent
        merged = {**agent.config.policy_raw, **agent.policy_override(),
                  **command.args["policy"]}
        try:
            policy = parse_policy(merged, "set_policy")
        except ConfigError as exc:
            raise CommandRejected(f"invalid policy: {exc}") from None
        override = {**agent.policy_override(), **command.args["policy"]}

        def apply() -> None:
            agent.store.set_setting("policy_override", json.dumps(override))
            agent.processor.policy = policy

        agent.on_processor(apply)
        return {"policy": override}

    def _do_add_meter(self, command: Command) -> dict[str, Any]:
        a = command.args
        protocol = next(b.protocol for b in self.agent.config.buses if b.name == a["bus"])
        record = MeterRecord(a["meter"], a["bus"], a["account"], a["tariff"], protocol,
                             a["multiplier"], a["keep_power"], a["allowance"])

        def add() -> None:
            self.agent.store.add_meter(record, a["initial_kwh"], self.agent.clock.now())
            self.agent.processor.reload()

        self.agent.on_processor(add)
        return {"meter": a["meter"]}

    def _do_remove_meter(self, command: Command) -> dict[str, Any]:
        meter = command.args["meter"]

        def remove() -> None:
            self.agent.store.remove_meter(meter)
            self.agent.processor.reload()

        self.agent.on_processor(remove)
        return {"meter": meter}

    def _do_read(self, command: Command) -> dict[str, Any]:
        meter, quantities = command.args["meter"], command.args["quantities"]
        values = self.agent.read(meter, quantities)
        return {"meter": meter, "values": values}

    def _do_sync(self, command: Command) -> dict[str, Any]:
        store, args = self.agent.store, command.args

        def resend() -> int:
            with store.transaction():
                if args["ids"] is not None:
                    return store.requeue_ledger_ids(args["ids"])
                return store.requeue_ledger(args["since_seq"], args.get("account"))

        count = self.agent.on_processor(resend)
        return {"entries": count}

    def _do_ping(self, command: Command) -> dict[str, Any]:
        return {"pong": self.agent.clock.now().isoformat(), "version": __version__}


__all__ = ["CommandHandler"]
