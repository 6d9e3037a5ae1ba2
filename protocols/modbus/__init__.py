"""Modbus RTU meters: register maps as data files, and the codec for their values."""

from .registers import MAPS, Register, RegisterMap, RelayPoint, decode, encode, load_map

__all__ = ["MAPS", "Register", "RegisterMap", "RelayPoint", "decode", "encode", "load_map"]
