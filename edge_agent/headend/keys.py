"""Ed25519 keys: the gateway's own pair, the head end's public keys by `kid`, signing.

The signed form of a command is the contract's canonical JSON of `cmd`:
`json.dumps(cmd, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`.
Keys are stored as PEM files: `<name>.key` (private, mode 0600) and `<name>.pub`.

The daemon only verifies: it loads the head end's public keys and checks signatures, both
with `cryptography`.  A public key file in the canonical form (one `PUBLIC KEY` PEM block
holding the RFC 8410 SubjectPublicKeyInfo of an Ed25519 key) is read without importing
`cryptography.hazmat.primitives.serialization` (its SSH, RSA, EC and cipher modules cost a
gateway ~1.2 MB); anything else goes through that module's full parser, as before.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import CommandRejected, ConfigError

# RFC 8410: the DER SubjectPublicKeyInfo of an Ed25519 key is this prefix and its 32 bytes.
ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
PUBLIC_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)\r?\n"
                        rb"-----END PUBLIC KEY-----")


def _serialization() -> ModuleType:
    """`cryptography`'s key (de)serialization, imported when a key is made, shown or read
    in a form other than the canonical Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    return serialization


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
    serialization = _serialization()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    serialization = _serialization()
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = _serialization().load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Ed25519 private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def _canonical_ed25519(data: bytes) -> Ed25519PublicKey | None:
    """The key of a file holding exactly one PEM block with an Ed25519 SubjectPublicKeyInfo
    (what `keys create` and `public_pem` write); None for anything else."""
    match = PUBLIC_PEM.fullmatch(data.strip())
    if match is None:
        return None
    try:
        der = base64.b64decode(b"".join(match[1].split()), validate=True)
    except ValueError:
        return None
    if len(der) != len(ED25519_SPKI) + 32 or not der.startswith(ED25519_SPKI):
        return None
    return Ed25519PublicKey.from_public_bytes(der[len(ED25519_SPKI):])


def load_public(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----"):
            key = _canonical_ed25519(data) or _serialization().load_pem_public_key(data)
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
