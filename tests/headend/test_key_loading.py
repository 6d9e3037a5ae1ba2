"""Head-end public keys: the canonical Ed25519 PEM is read without cryptography's
serialization module, to the same key; everything else still goes through that module and
is refused as before."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import CommandRejected, ConfigError
from edge_agent.headend.keys import KeyRing, _canonical_ed25519, create_pair, load_public, sign

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def test_the_canonical_pem_gives_the_same_key_as_the_library(tmp_path) -> None:
    _, public = create_pair(tmp_path, "headend-1")
    data = public.read_bytes()
    fast = _canonical_ed25519(data)
    assert fast is not None
    assert fast.public_bytes(*RAW) == serialization.load_pem_public_key(data).public_bytes(*RAW)
    assert _canonical_ed25519(data.replace(b"\n", b"\r\n")) is not None  # written on Windows


def test_a_key_ring_verifies_with_keys_read_either_way(tmp_path) -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir()
    (ring_dir / "canonical.pub").write_bytes(pem)
    (ring_dir / "commented.pub").write_bytes(pem + b"# head end 1\n")  # the full parser's
    raw = private.public_key().public_bytes(*RAW)
    (ring_dir / "raw.pub").write_bytes(base64.b64encode(raw))
    ring = KeyRing(ring_dir)
    cmd = {"id": "c-1", "type": "ping"}
    assert _canonical_ed25519(pem) is not None
    assert _canonical_ed25519(pem + b"# head end 1\n") is None
    for kid in ("canonical", "commented", "raw"):
        ring.verify(kid, cmd, sign(cmd, private))
        with pytest.raises(CommandRejected, match="bad signature"):
            ring.verify(kid, {**cmd, "id": "c-2"}, sign(cmd, private))


@pytest.mark.parametrize("mangle", [
    lambda pem: pem.replace(b"MCow", b"MCsw"),  # another DER length: not the Ed25519 form
    lambda pem: pem + b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    lambda pem: pem.replace(b"PUBLIC KEY", b"PRIVATE KEY"),
])
def test_anything_but_the_canonical_form_goes_to_the_full_parser(tmp_path, mangle) -> None:
    _, public = create_pair(tmp_path, "headend-1")
    assert _canonical_ed25519(mangle(public.read_bytes())) is None


def test_other_key_types_and_garbage_are_still_refused(tmp_path) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pub").write_bytes(other)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_public(tmp_path / "ec.pub")
    (tmp_path / "bad.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64!\n"
                                       b"-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        load_public(tmp_path / "bad.pub")
