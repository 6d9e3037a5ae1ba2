"""DL/T 645 (2007, and reads from 1997 meters): frame codec, catalogue and messages."""

from .catalogue import BY_DI, BY_NAME, DataItem, decode_value, encode_value, lookup
from .frame import BROADCAST, WILDCARD, Control, Frame, decode, encode, find_frame
from .messages import Function, RelayAction, check_reply, describe, reply_value

__all__ = [
    "BROADCAST", "BY_DI", "BY_NAME", "WILDCARD", "Control", "DataItem", "Frame", "Function",
    "RelayAction", "check_reply", "decode", "decode_value", "describe", "encode",
    "encode_value", "find_frame", "lookup", "reply_value",
]
