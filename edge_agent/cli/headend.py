"""`edge-agent headend`: the integrator's side of the MQTT contract, for commissioning.

`sign` prints a signed command, `send` signs one with a head-end key, publishes it and waits
for its `cmd/result`, `watch` prints what a gateway publishes.  The signing is
`edge_agent.headend.signing`, the same code the head-end simulator and the tests use.  paho
and cryptography are imported only when a verb runs (the CLI starts fast).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click

from edge_agent.errors import Malformed, UsageError

from .root import dumps, main


def _args(pairs: tuple[str, ...], typed: tuple[str, ...], args_json: str | None
          ) -> dict[str, Any]:
    """`--args '{...}'`, `-a key=value` (a string: money is a string) and `-j key=JSON`
    (numbers, booleans, lists: `-j multiplier=2 -j force=true`)."""
    out: dict[str, Any] = {}
    if args_json:
        try:
            loaded = json.loads(args_json)
        except ValueError as exc:
            raise UsageError(f"--args is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--args must be a JSON object")
        out.update(loaded)
    for pair in pairs + typed:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r}: use key=value")
        if pair in typed:
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"-j {key}: not JSON ({exc})") from None
        else:
            out[key] = value
    return out


def _envelope(kind: str, args: dict[str, Any], gw: str, key_file: str, kid: str,
              cmd_id: str | None, ttl: int) -> dict[str, Any]:
    from datetime import timedelta

    from edge_agent.headend.commands import COMMANDS
    from edge_agent.headend.keys import load_private
    from edge_agent.headend.signing import envelope

    if kind not in COMMANDS:
        raise UsageError(f"unknown command type {kind!r} (one of {', '.join(COMMANDS)})")
    try:
        COMMANDS[kind].args.parse(dict(args))  # the gateway would refuse it: say so here
    except Malformed as exc:
        raise UsageError(f"{kind}: {exc}") from None
    return envelope(kind, args, gw, load_private(Path(key_file)), kid, cmd_id=cmd_id,
                    ttl=timedelta(seconds=ttl))


def _client(broker: str, ca: str | None, cert: str | None, keyfile: str | None,
            client_id: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = urlparse(broker)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=keyfile, cert_reqs=ssl.CERT_REQUIRED)
    port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    try:
        client.connect(url.hostname or "localhost", port, 30)
    except OSError as exc:
        raise UsageError(f"cannot connect to {broker}: {exc}") from None
    return client


def command_options(func: Any) -> Any:
    for option in reversed([
        click.argument("kind"),
        click.option("-a", "--arg", "pairs", multiple=True,
                     help="key=value, a string argument (repeatable)."),
        click.option("-j", "--json-arg", "typed", multiple=True,
                     help="key=JSON, a number, boolean or list argument (repeatable)."),
        click.option("--args", "args_json", help="All arguments as one JSON object."),
        click.option("--gw", required=True, help="Gateway id."),
        click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
                     help="Head-end private key (edge-agent keys create)."),
        click.option("--kid", default="headend-1", show_default=True, help="Key id."),
        click.option("--id", "cmd_id", default=None, help="Command id (default: new)."),
        click.option("--ttl", default=600, show_default=True, help="Seconds valid."),
    ]):
        func = option(func)
    return func


def broker_options(func: Any) -> Any:
    for option in reversed([
        click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True),
        click.option("--prefix", default="edge", show_default=True),
        click.option("--ca", default=None, help="CA file (mqtts)."),
        click.option("--cert", default=None, help="Client certificate (mqtts)."),
        click.option("--cert-key", "cert_key", default=None, help="Client key (mqtts)."),
    ]):
        func = option(func)
    return func


@main.group()
def headend() -> None:
    """Act as the head end: sign and send commands, watch a gateway (commissioning)."""


@headend.command("sign")
@command_options
def headend_sign(kind: str, pairs: tuple[str, ...], typed: tuple[str, ...],
                 args_json: str | None, gw: str, key_file: str, kid: str, cmd_id: str | None,
                 ttl: int) -> None:
    """Print a signed command envelope (JSON) without sending it."""
    click.echo(dumps(_envelope(kind, _args(pairs, typed, args_json), gw, key_file, kid,
                               cmd_id, ttl)))


@headend.command("send")
@command_options
@broker_options
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the result.")
def headend_send(kind: str, pairs: tuple[str, ...], typed: tuple[str, ...],
                 args_json: str | None, gw: str,
                 key_file: str, kid: str, cmd_id: str | None, ttl: int, broker: str,
                 prefix: str, ca: str | None, cert: str | None, cert_key: str | None,
                 wait: float) -> None:
    """Sign a command, publish it to PREFIX/GW/cmd and print its cmd/result.

    Exit 0 when the result is `ok`, 1 when `rejected` or `failed` or nothing came back."""
    envelope = _envelope(kind, _args(pairs, typed, args_json), gw, key_file, kid, cmd_id,
                         ttl)
    wanted = envelope["cmd"]["id"]
    found: list[dict[str, Any]] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("cmd_id") == wanted:
            found.append(body)
            done.set()

    client = _client(broker, ca, cert, cert_key, f"edge-agent-headend-{time.time_ns()}")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.loop_start()
    try:
        client.subscribe(f"{prefix}/{gw}/cmd/result", qos=1)
        subscribed.wait(10)
        client.publish(f"{prefix}/{gw}/cmd", json.dumps(envelope), qos=1).wait_for_publish(10)
        done.wait(wait)
    finally:
        client.loop_stop()
        client.disconnect()
    if not found:
        click.echo(f"error: no result for {wanted} within {wait:g} s", err=True)
        raise SystemExit(1)
    click.echo(dumps(found[0]))
    if found[0].get("status") != "ok":
        raise SystemExit(1)


@headend.command("watch")
@click.option("--gw", default="+", show_default=True, help="Gateway id (+: every gateway).")
@broker_options
@click.option("--count", default=0, help="Stop after this many messages (0: never).")
@click.option("--timeout", default=0.0, help="Stop after this many seconds (0: never).")
def headend_watch(gw: str, broker: str, prefix: str, ca: str | None, cert: str | None,
                  cert_key: str | None, count: int, timeout: float) -> None:
    """Print every message a gateway publishes, one JSON line each: {"topic", "body"}."""
    seen = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal seen
        try:
            body: Any = json.loads(message.payload)
        except ValueError:
            body = message.payload.decode("utf-8", "replace")
        with lock:
            click.echo(json.dumps({"topic": message.topic, "body": body}, ensure_ascii=False))
            seen += 1
            if count and seen >= count:
                done.set()

    client = _client(broker, ca, cert, cert_key, f"edge-agent-watch-{time.time_ns()}")
    client.on_message = on_message
    client.subscribe(f"{prefix}/{gw}/#", qos=1)
    client.loop_start()
    try:
        done.wait(timeout or None)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
