"""The use cases the head end, the control socket and the CLI share, each written once.

An operation checks what it needs (raising `NotFound`, `Conflict`, `Malformed`, ...: the
caller maps the type to `rejected` or an exit code), does any slow bus work on the caller's
thread, and returns a `Plan`: `apply` runs on the processing thread (the single writer) inside
the caller's transaction, so a head-end command's id, its effect and its answer are stored
together (exactly once); `after` runs once that transaction committed (relay restores a top-up
allows go ahead of polling).

Meter settings the head end changes (tariff, keep-power, removal, policy) are recorded with
their source in `meter_settings` and win over `agent.toml` until changed again
(docs/mqtt.md, "Who owns a meter's settings").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent import __version__
from edge_agent.config import FIELD_DATA
from edge_agent.errors import (
    ConfigError,
    Conflict,
    Malformed,
    TariffError,
    UnknownAccount,
    UnknownBus,
    UnknownMeter,
    UnknownTariff,
)
from edge_agent.prepaid.money import format_money
from edge_agent.prepaid.records import Event, LedgerEntry
from edge_agent.prepaid.vocabulary import RelayOrder, order_for
from edge_agent.store import MeterRecord
from edge_agent.store.database import wire_time

TECHNICIAN_WAIT = 300.0  # seconds a technician's relay action may wait for its bus


@dataclass
class Context:
    """Who asks (`headend:<kid>`, `technician:<user>`), on behalf of which command."""

    actor: str
    cmd_id: str | None = None
    now: datetime | None = None


@dataclass
class Plan:
    apply: Callable[[], dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    after: Callable[[], Any] | None = None
    _state: dict[str, Any] = field(default_factory=dict)


def _active_meter(agent: Any, meter: str) -> MeterRecord:
    record = agent.store.meter(meter)
    if record is None or not record.active:
        raise UnknownMeter(f"unknown meter {meter}")
    return record


def _source(ctx: Context) -> str:
    return "headend" if ctx.actor.startswith("headend") else "technician"


def _file_value(agent: Any, meter: str, name: str) -> str | None:
    return _config_value(agent.config, meter, name)


def _config_value(config: Any, meter: str, name: str) -> str | None:
    """What the file says of a meter's setting (None: the file does not list the meter), kept
    with an owned setting so that a conflict is raised only when the file changes."""
    for m in (config.meters if config is not None else ()):
        if m.address == meter:
            value = getattr(m, name, False)  # "removed", "added": the file lists it
            return json.dumps(value) if isinstance(value, bool) else str(value)
    return None


def own(agent: Any, ctx: Context, meter: str, name: str, value: str) -> None:
    """Record that `name` of `meter` is now set by this caller, not by the file."""
    agent.store.set_meter_setting(meter, name, value, _source(ctx), ctx.now or agent.clock.now(),
                                  _file_value(agent, meter, name))


# -- money ----------------------------------------------------------------------------------
def _money(agent: Any, args: dict[str, Any], ctx: Context, kind: str) -> Plan:
    detail: dict[str, Any] = {"cmd": ctx.cmd_id} if ctx.cmd_id else {"by": ctx.actor}
    if kind == "adjustment":
        detail["reason"] = args.get("reason", "")
    entry = LedgerEntry(args["txn_id"], args["account"], kind, args["amount"],
                        ctx.now or agent.clock.now(), None, detail)
    plan = Plan()

    def apply() -> dict[str, Any]:
        try:
            agent.store.balance(args["account"])
        except UnknownAccount:
            raise UnknownAccount(f"unknown account {args['account']!r}") from None
        if args.get("seq") is not None:  # a top-up numbered per account: gaps are raised
            added, decisions = agent.processor.apply_topup(entry, args["seq"],
                                                           agent.clock.now(), _source(ctx))
        else:
            added, decisions = agent.processor.apply_entries([entry], agent.clock.now(),
                                                             _source(ctx))
        plan._state["decisions"] = decisions
        return {"txn_id": args["txn_id"], "applied": bool(added),
                "balance": format_money(agent.store.balance(args["account"]))}

    plan.apply = apply
    plan.after = lambda: agent.dispatch(plan._state.get("decisions", []))
    return plan


def topup(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    return _money(agent, args, ctx, "topup")


def adjust(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    return _money(agent, args, ctx, "adjustment")


# -- relays ---------------------------------------------------------------------------------
def relay_order(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    """Trip, close, keep_power_on/off on a billed meter.  Keep-power is absolute: a trip of a
    keep-power meter is refused unless `force` (the head end's only), recorded as forced."""
    meter, order, force = args["meter"], args["action"], bool(args.get("force"))
    record = _active_meter(agent, meter)
    if order == "trip" and record.keep_power and not force:
        raise Conflict(f"meter {meter} has keep-power on; a trip needs \"force\": true")
    reason = f"command {ctx.cmd_id}" if ctx.cmd_id else "technician CLI"
    if force:
        reason += " (forced over keep-power)" if record.keep_power else " (force)"
    released = force and record.keep_power
    if released:  # the meter itself refuses a trip while it keeps power: release it first
        agent.operator_relay(meter, "keep_power_off", actor=ctx.actor, reason=reason)
    result = agent.operator_relay(meter, order, actor=ctx.actor, reason=reason, force=force)
    if force:
        result["forced"] = True
    plan = Plan(result=result)
    if order in (RelayOrder.KEEP_POWER_ON, RelayOrder.KEEP_POWER_OFF) or released:
        value = json.dumps(order == RelayOrder.KEEP_POWER_ON)

        def apply() -> dict[str, Any]:
            own(agent, ctx, meter, "keep_power", value)
            return result

        plan.apply = apply
    return plan


def technician_relay(agent: Any, worker: Any, address: str, action: str, actor: str) -> Any:
    """A technician's relay action through the daemon: billed meters go through
    `relay_order` (recorded, keep-power honoured); others are carried out and recorded."""
    from edge_agent.field.worker import RELAY, outcome

    order = order_for(action)
    record = agent.store.meter(address)
    if record is not None and record.active and order is not None:
        plan = relay_order(agent, {"meter": address, "action": order}, Context(actor))
        if plan.apply is not None:
            agent.on_processor(_in_transaction(agent, plan.apply))
        return plan.result
    state = outcome(worker.submit(lambda driver: driver.relay(address, action), RELAY),
                    TECHNICIAN_WAIT)
    agent.record_technician(address, action, state, actor)
    return {"meter": address, "action": action, "relay": state}


def _in_transaction(agent: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with agent.store.transaction():
            return fn()
    return run


# -- tariffs and policy ----------------------------------------------------------------------
def set_tariff(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    from edge_agent.prepaid.tariff import combine_versions, tariff_from_text, version_key

    tariff_id, body = args["tariff_id"], args["body"]
    try:
        tariff = tariff_from_text(body, f"head-end tariff {tariff_id}")
    except TariffError as exc:
        raise Malformed("invalid tariff: " + "; ".join(exc.problems)) from None
    if tariff.id != tariff_id:
        raise Malformed(f"invalid tariff: body has id {tariff.id!r}, command says {tariff_id!r}")

    def apply() -> dict[str, Any]:
        # A pushed tariff is a version: it may wait for its `effective_from`, and it joins
        # the versions of the same id already known (file or head end).
        agent.store.save_tariff(tariff_id, body, agent.clock.now(), version_key(tariff))
        existing = agent.tariffs.get(tariff_id)
        versions = {version_key(v): v for v in (existing.versions() if existing else ())}
        versions[version_key(tariff)] = tariff
        agent.tariffs[tariff_id] = combine_versions(versions.values())[tariff_id]
        return {"tariff_id": tariff_id, "effective_from": version_key(tariff) or None}

    return Plan(apply=apply)


def assign_tariff(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    meter, tariff = args["meter"], args["tariff_id"]
    _active_meter(agent, meter)
    if tariff not in agent.tariffs:
        raise UnknownTariff(f"unknown tariff {tariff!r}")

    def apply() -> dict[str, Any]:
        agent.store.set_meter_tariff(meter, tariff)
        own(agent, ctx, meter, "tariff", tariff)
        agent.processor.reload()
        return {"meter": meter, "tariff_id": tariff}

    return Plan(apply=apply)


def set_policy(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    from edge_agent.prepaid.policy import parse_policy

    override = {**agent.policy_override(), **args["policy"]}
    try:
        policy = parse_policy({**agent.config.policy_raw, **override}, "set_policy")
    except ConfigError as exc:
        raise Malformed(f"invalid policy: {exc}") from None

    def apply() -> dict[str, Any]:
        agent.store.set_setting("policy_override", json.dumps(override))
        agent.processor.policy = policy
        return {"policy": override}

    return Plan(apply=apply)


# -- meters ---------------------------------------------------------------------------------
def add_meter(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    meter = args["meter"]
    known = agent.store.meter(meter)
    if known is not None and known.active:
        raise Conflict(f"meter {meter} is already registered")
    bus = next((b for b in agent.config.buses if b.name == args["bus"]), None)
    if bus is None:
        raise UnknownBus(f"unknown bus {args['bus']!r}")
    if args["tariff"] not in agent.tariffs:
        raise UnknownTariff(f"unknown tariff {args['tariff']!r}")
    if bus.protocol.startswith("dlt645") and not (meter.isdigit() and len(meter) == 12):
        raise Malformed(f"meter {meter}: a DL/T 645 address is 12 digits")
    behind = args.get("behind")
    if behind is not None:
        check_behind(agent.config, meter, behind)
    elif known is not None:  # added again without it: the meter stays in the area it was in
        behind = known.behind
    record = MeterRecord(meter, args["bus"], args["account"], args["tariff"], bus.protocol,
                         args.get("multiplier") or 1, bool(args.get("keep_power")),
                         bool(args.get("allowance")), behind=behind)

    location = {k: args[k] for k in FIELD_DATA if args.get(k) is not None}

    def apply() -> dict[str, Any]:
        agent.store.add_meter(record, args["initial_kwh"], agent.clock.now())
        agent.store.clear_meter_settings(meter)
        own(agent, ctx, meter, "added", "true")
        if location:  # none given: a meter added again keeps the field data it had
            agent.store.set_meter_location(meter, location, _source(ctx), agent.clock.now())
        agent.processor.reload()
        return {"meter": meter, **({"location": location} if location else {}),
                **({"behind": behind} if behind else {})}

    return Plan(apply=apply)


def check_behind(config: Any, meter: str, behind: str) -> None:
    """`behind` must name a total meter of the configuration (a line-loss area)."""
    totals = {m.address for m in (config.total_meters if config is not None else ())}
    if behind not in totals:
        known = ", ".join(sorted(totals)) or "none configured"
        raise UnknownMeter(f"meter {meter}: behind {behind!r} is not a total meter "
                           f"([[meter]] role = \"total\"; total meters: {known})")


def remove_meter(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    meter = args["meter"]
    _active_meter(agent, meter)

    def apply() -> dict[str, Any]:
        agent.store.remove_meter(meter)
        own(agent, ctx, meter, "removed", "true")
        agent.processor.reload()
        return {"meter": meter}

    return Plan(apply=apply)


# -- commissioning (technicians: `edge-agent commission`, through the daemon when it runs) ------
def meter_record(config: Any, tariff_ids: set[str] | None, args: dict[str, Any]
                 ) -> MeterRecord:
    """A meter to commission, checked against the configuration: bus, tariff, address
    (12 digits for DL/T 645), protocol (the bus's), Modbus unit (1-247) and register map."""
    address, bus_name = str(args["address"]), str(args["bus"])
    protocol = args.get("protocol") or "dlt645-2007"
    if config is not None:  # without one (`--db` only) the bus and tariff cannot be checked
        bus = next((b for b in config.buses if b.name == bus_name), None)
        if bus is None:
            raise UnknownBus(f"unknown bus {bus_name!r}")
        protocol = args.get("protocol") or bus.protocol
        if protocol != bus.protocol:
            raise Malformed(f"bus {bus_name} speaks {bus.protocol}, not {protocol}")
    if tariff_ids is not None and args.get("tariff") not in tariff_ids:
        raise UnknownTariff(f"unknown tariff {args.get('tariff')!r}")
    unit, model = args.get("unit"), args.get("model")
    if protocol.startswith("dlt645"):
        if not (address.isascii() and address.isdigit() and len(address) == 12):
            raise Malformed(f"meter {address!r}: a DL/T 645 address is 12 digits")
        unit = model = None
    else:
        if not isinstance(unit, int) or not 1 <= unit <= 247:
            raise Malformed(f"meter {address}: a Modbus unit id from 1 to 247 is required")
        if not model:
            raise Malformed(f"meter {address}: a Modbus register map (model) is required")
        from protocols.modbus.registers import load_map

        load_map(model)  # RegisterMapError names the known maps
    behind = args.get("behind")  # a replaced meter's is inherited (its record's)
    return MeterRecord(address, bus_name, str(args["account"]), str(args["tariff"]), protocol,
                       int(args.get("multiplier") or 1), bool(args.get("keep_power")),
                       bool(args.get("allowance")), unit, model,
                       behind=None if behind is None else str(behind))


def bill_final(processor: Any, meter: str, kwh: Any, at: datetime) -> None:
    """Bill a meter up to its final reading (a swap), in the caller's transaction: what it
    counted since its last billed reading is the customer's, as a poll would bill it."""
    from edge_agent.prepaid.billing import DEFAULT_REGISTER_MAX, bill
    from edge_agent.prepaid.records import RegisterReading

    state = processor.billing.get(meter)
    if state is None:
        return
    result = bill(state, RegisterReading(meter, at, kwh), processor._tariff(state.tariff),
                  processor.tz, processor.gateway, processor._tier_bonus(state.account),
                  processor.register_max.get(meter, DEFAULT_REGISTER_MAX))
    processor.store.append_ledger_entries(result.entries)
    processor.store.save_billing_states([result.state], previous=processor.billing)
    processor.store.record_events(result.events)


def commission(store: Any, config: Any, tariff_ids: set[str] | None, request: dict[str, Any],
               actor: str, now: datetime, processor: Any = None
               ) -> tuple[Callable[[], dict[str, Any]], list[str]]:
    """Check a `commission add|replace|remove` request; return the write (to run in one
    transaction, on the daemon's processing thread when it runs) and the meters it touches.
    With the `processor` (over the same store), a replaced meter is billed up to its final
    reading; the caller reloads the processor after the write."""
    from decimal import Decimal

    action = request.get("action")
    source = "headend" if actor.startswith("headend") else "technician"
    for key in ("initial_kwh", "old_final_kwh", "new_initial_kwh"):
        if key in request:
            request = {**request, key: Decimal(str(request[key]))}
    if action == "add":
        record = meter_record(config, tariff_ids, request)
        if record.behind is not None:  # without the configuration it cannot be checked
            check_behind(config, record.address, record.behind)
        known = store.meter(record.address)
        if known is not None and known.active:
            raise Conflict(f"meter {record.address} is already registered; "
                           "use commission replace")
        initial = request["initial_kwh"]

        def add() -> dict[str, Any]:
            store.add_meter(record, initial, now)
            store.clear_meter_settings(record.address)
            store.set_meter_setting(record.address, "added", "true", source, now,
                                    _config_value(config, record.address, "added"))
            return {"meter": record.address, "commissioned": True}

        return add, [record.address]
    if action == "replace":
        old, new = str(request["old"]), str(request["new"])
        before = store.meter(old)
        if before is None or not before.active:
            raise UnknownMeter(f"unknown meter {old}")
        record = meter_record(config, tariff_ids, {
            **before.__dict__, "address": new, "protocol": before.protocol,
            "unit": request.get("unit", before.unit), "model": request.get("model", before.model)})

        def replace() -> dict[str, Any]:
            if processor is not None:
                bill_final(processor, old, request["old_final_kwh"], now)
            store.replace_meter(old, record, request["old_final_kwh"],
                                request["new_initial_kwh"], now)
            store.set_meter_setting(old, "removed", "true", source, now,
                                    _config_value(config, old, "removed"))
            store.set_meter_setting(new, "added", "true", source, now,
                                    _config_value(config, new, "added"))
            return {"old": old, "new": new, "replaced": True,
                    **({"behind": record.behind} if record.behind else {})}

        return replace, [old, new]
    if action == "remove":
        address = str(request["address"])
        record = store.meter(address)
        if record is None or not record.active:
            raise UnknownMeter(f"unknown meter {address}")

        def remove() -> dict[str, Any]:
            store.remove_meter(address)
            store.set_meter_setting(address, "removed", "true", source, now,
                                    _config_value(config, address, "removed"))
            return {"meter": address, "removed": True}

        return remove, [address]
    raise Malformed(f"unknown commission action {action!r}")


def commission_through_agent(agent: Any, request: dict[str, Any], actor: str) -> dict[str, Any]:
    """The control socket's `commission`: checked, then written on the processing thread."""
    write, _ = commission(agent.store, agent.config, set(agent.tariffs), request, actor,
                          agent.clock.now(), agent.processor)

    def run() -> dict[str, Any]:
        with agent.store.transaction():
            result = write()
        agent.processor.reload()
        return result

    return agent.on_processor(run)


# -- reading, resending, ping ----------------------------------------------------------------
def wire_values(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readings as the contract shows them everywhere: status words as 4 hex digits."""
    return [{**v, "value": f"{v['value']:04X}"}
            if str(v.get("name", "")).startswith("status_word") and isinstance(v.get("value"), int)
            else v for v in values]


def read(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    meter = args["meter"]
    _active_meter(agent, meter)
    try:
        values = agent.read(meter, list(args.get("quantities") or ["energy"]))
    except (KeyError, LookupError) as exc:
        raise Malformed(f"unknown quantity: {exc}") from None
    return Plan(result={"meter": meter, "values": wire_values(values)})


def technician_read(worker: Any, address: str, quantities: list[str], wait: float) -> Any:
    """A technician's reading through the daemon's bus worker (any meter on the port, billed
    or not), ahead of routine polling; values as on the wire contract."""
    from edge_agent.field.worker import TECHNICIAN

    return wire_values(worker.submit(lambda driver: driver.read(address, quantities),
                                     TECHNICIAN).result(wait))


def scan(worker: Any, timeout: float | None, wait: float) -> list[str]:
    """Find the meters on a port the daemon owns, between its routine polls."""
    from edge_agent.field.worker import TECHNICIAN

    return worker.submit(lambda driver: driver.scan(timeout), TECHNICIAN).result(wait)


def resend(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    store = agent.store

    def apply() -> dict[str, Any]:
        if args.get("ids"):
            count = store.requeue_ledger_ids(args["ids"])
        else:
            count = store.requeue_ledger(args.get("since_seq") or 0, args.get("account"))
        return {"entries": count}

    return Plan(apply=apply)


def set_account_class(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    """An account's policy class (None: the default policy) and household tier bonus."""

    def apply() -> dict[str, Any]:
        agent.processor.set_account_class(args["account"], args["policy_class"],
                                          args.get("tier_bonus_kwh"), agent.clock.now(),
                                          ctx.actor)
        return {"account": args["account"], "policy_class": args["policy_class"]}

    return Plan(apply=apply)


def ping(agent: Any, args: dict[str, Any], ctx: Context) -> Plan:
    return Plan(result={"pong": wire_time(agent.clock.now()), "version": __version__})


def record_events(agent: Any, events: list[Event]) -> None:
    def write() -> None:
        with agent.store.transaction():
            agent.store.record_events(events)
    agent.on_processor(write)


#: Operation names of the command table (`edge_agent.headend.commands.COMMANDS`).
OPERATIONS: dict[str, Callable[[Any, dict[str, Any], Context], Plan]] = {
    "topup": topup, "adjust": adjust, "relay_order": relay_order, "set_tariff": set_tariff,
    "assign_tariff": assign_tariff, "set_policy": set_policy, "add_meter": add_meter,
    "remove_meter": remove_meter, "read": read, "resend": resend, "ping": ping,
    "set_account_class": set_account_class,
}
