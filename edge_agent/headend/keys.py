"""Ed25519 keys: the gateway's own pair, the head end's public keys by `kid`, signing.

The signed form of a command is the contract's canonical JSON of `cmd`:
`json.dumps(cmd, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`.
Keys are stored as PEM files: `<name>.key` (private, mode 0600) and `<name>.pub`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import CommandRejected, ConfigError


def canonical(cmd: dict[str, Any]) -> bytes:
    return json.dumps(cmd, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(cmd: dict[str, Any], key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(canonical(cmd))).decode()


def create_pair(directory: Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Make `<name>.key` and `<name>.pub` in `directory`; refuse to overwrite a key."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if private_path.exists() and not overwrite:
        raise ConfigError(f"{private_path} exists; refusing to replace a key (use --force)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Ed25519 private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(data)
        else:  # 32 raw bytes, base64: what some head ends hand out
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an Ed25519 public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


class KeyRing:
    """The head end's public keys, by `kid` (file `<kid>.pub` in a directory)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.reload()

    def reload(self) -> None:
        keys = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.pub")):
                keys[path.stem] = load_public(path)
        self.keys = keys

    def install(self, kid: str, source: Path) -> Path:
        load_public(source)  # refuse garbage before installing it
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{kid}.pub"
        target.write_bytes(source.read_bytes())
        self.reload()
        return target

    def verify(self, kid: str, cmd: dict[str, Any], signature: str) -> None:
        key = self.keys.get(kid)
        if key is None:
            raise CommandRejected(f"unknown key id {kid!r}")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError):
            raise CommandRejected("signature is not base64") from None
        try:
            key.verify(raw, canonical(cmd))
        except InvalidSignature:
            raise CommandRejected("bad signature") from None
