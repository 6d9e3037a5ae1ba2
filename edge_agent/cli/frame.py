"""`edge-agent frame decode|encode`: look at or build single DL/T 645 frames."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from edge_agent.errors import FrameError, UsageError
from protocols.dlt645 import catalogue, messages
from protocols.dlt645.frame import Frame, decode

from .root import emit, json_option, main


def parse_hex(words: tuple[str, ...]) -> bytes:
    text = "".join(words).replace(" ", "").replace(":", "")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise FrameError("hex", f"{text!r} is not a hexadecimal byte string") from exc


def parse_time(text: str) -> datetime:
    """An ISO time from the command line; a bad one is a usage error, not a traceback."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--time {text!r} is not an ISO time (e.g. 2026-11-22T10:00:00)"
                         ) from None


@main.group()
def frame() -> None:
    """Decode or build a single DL/T 645 frame."""


@frame.command("decode")
@click.argument("hex_words", nargs=-1, required=True, metavar="HEX")
@json_option
def frame_decode(hex_words: tuple[str, ...], as_json: bool) -> None:
    """Decode one frame: spaces allowed, FE preamble optional.

    \b
    Example:
      edge-agent frame decode FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16
    """
    raw = parse_hex(hex_words)
    fields = messages.describe(decode(raw))
    emit(fields, as_json, lambda: _print_fields(fields))


def _print_fields(fields: dict[str, object], indent: str = "") -> None:
    for key, value in fields.items():
        if isinstance(value, dict):
            click.echo(f"{indent}{key}:")
            _print_fields(value, indent + "  ")
        else:
            click.echo(f"{indent}{key}: {value}")


@frame.command("encode")
@click.argument(
    "kind",
    type=click.Choice([
        "read", "read-follow-up", "read-address", "write", "write-address", "broadcast-time",
        "freeze", "change-baud", "meter-clear", "event-clear", "demand-clear", "relay",
    ]),
)
@click.option("--address", "-a", default="AAAAAAAAAAAA", help="Meter address, nameplate order.")
@click.option("--di", default="energy", help="Data identifier or catalogue name (read/write).")
@click.option("--value", "value_hex", default="", help="Value bytes, hex (write).")
@click.option("--seq", default=1, type=int, help="Frame sequence (read-follow-up).")
@click.option("--time", "moment", default=None, help="ISO time (broadcast-time, freeze).")
@click.option("--baud", default=9600, type=int, help="New baud rate (change-baud).")
@click.option("--action", default="trip", type=click.Choice(sorted(messages.RELAY_ACTIONS)),
              help="Relay action (relay).")
@click.option("--valid-minutes", default=10, type=int, help="Validity of a relay command.")
@click.option("--password", default=messages.DEFAULT_PASSWORD, help="PA P0 P1 P2, hex.")
@click.option("--operator", default=messages.DEFAULT_OPERATOR, help="C0..C3, hex.")
@click.option("--no-preamble", is_flag=True, help="Leave out the FE FE FE FE wake-up bytes.")
@json_option
def frame_encode(kind: str, address: str, di: str, value_hex: str, seq: int,
                 moment: str | None, baud: int, action: str, valid_minutes: int,
                 password: str, operator: str, no_preamble: bool, as_json: bool) -> None:
    """Build a request frame and print it as hex.

    \b
    Examples:
      edge-agent frame encode read -a 000000000001 --di energy
      edge-agent frame encode relay -a 000000000001 --action trip
      edge-agent frame encode broadcast-time --time 2026-11-22T10:00:00
    """
    when = parse_time(moment) if moment else datetime.now().replace(microsecond=0)

    def item_di() -> int:
        try:
            return catalogue.lookup(di).di
        except KeyError:
            try:
                value = int(di.removeprefix("0x").removeprefix("0X"), 16)
            except ValueError:
                value = -1
            if not 0 <= value <= 0xFFFFFFFF:
                raise UsageError(f"--di {di!r} is neither a catalogue name nor a data "
                                 "identifier of 8 hex digits") from None
            return value

    builders = {
        "read": lambda: messages.read(address, item_di()),
        "read-follow-up": lambda: messages.read_follow_up(address, item_di(), seq),
        "read-address": messages.read_address,
        "write": lambda: messages.write(address, item_di(), parse_hex((value_hex,)),
                                        password, operator),
        "write-address": lambda: messages.write_address(address),
        "broadcast-time": lambda: messages.broadcast_time(when),
        "freeze": lambda: messages.freeze(address, when if moment else None),
        "change-baud": lambda: messages.change_baud(address, baud),
        "meter-clear": lambda: messages.meter_clear(address, password, operator),
        "event-clear": lambda: messages.event_clear(address, password=password,
                                                    operator=operator),
        "demand-clear": lambda: messages.demand_clear(address, password, operator),
        "relay": lambda: messages.relay_control(
            address, messages.RELAY_ACTIONS[action], timedelta(minutes=valid_minutes),
            password, operator, now=when),
    }
    built: Frame = builders[kind]()
    wire = built.encode(preamble=not no_preamble)
    text = wire.hex(" ").upper()
    emit({"kind": kind, "hex": text, "frame": messages.describe(built)}, as_json,
         lambda: click.echo(text))
