"""`edge-agent keys`: the gateway's key pair and the head end's public keys."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edge_agent.config import KeysConfig
from edge_agent.errors import ConfigError, EdgeAgentError, UsageError

from .root import emit, json_option, main


def _keys_config() -> KeysConfig:
    from .state import current_config

    try:
        return current_config().keys
    except ConfigError:
        return KeysConfig()


#: A key id or file stem: it becomes a file name, so no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def safe_name(value: str, what: str) -> str:
    """Refuse a kid or key name that could leave its directory (`../../x`, `a/b`, `.x`)."""
    if not SAFE_NAME.fullmatch(value):
        raise UsageError(f"{what} {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return value


@main.group()
def keys() -> None:
    """Ed25519 keys: the gateway's pair and the head end's public keys by kid."""


@keys.command("create")
@click.option("--name", default="gateway", show_default=True, help="File name stem.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Directory (default: [keys].directory of the configuration).")
@click.option("--force", is_flag=True, help="Replace an existing key.")
@json_option
def keys_create(name: str, out_dir: str | None, force: bool, as_json: bool) -> None:
    """Create a key pair (NAME.key, mode 0600, and NAME.pub).

    The head-end simulator signs commands with a pair made here:
    `edge-agent keys create --name headend-1 --out ./keys`.
    """
    from edge_agent.headend.keys import create_pair  # cryptography only when keys are used

    safe_name(name, "--name")
    directory = Path(out_dir) if out_dir else Path(_keys_config().directory)
    try:
        private, public = create_pair(directory, name, overwrite=force)
    except OSError as exc:
        raise EdgeAgentError(f"cannot create keys in {directory}: {exc.strerror}") from None
    emit({"private_key": str(private), "public_key": str(public),
          "public_pem": public.read_text()}, as_json,
         lambda: click.echo(f"created {private} and {public}"))


@keys.command("show")
@click.option("--name", default="gateway", show_default=True)
@json_option
def keys_show(name: str, as_json: bool) -> None:
    """Show the gateway's public key (give it to the head end)."""
    from edge_agent.headend.keys import KeyRing, load_private, public_pem

    safe_name(name, "--name")
    config = _keys_config()
    key = load_private(Path(config.directory) / f"{name}.key")
    pem = public_pem(key.public_key()).decode()
    ring = KeyRing(config.headend_keys)
    emit({"public_pem": pem, "headend_kids": sorted(ring.keys)}, as_json,
         lambda: click.echo(pem.rstrip() + f"\nhead-end keys installed: "
                            f"{', '.join(sorted(ring.keys)) or 'none'}"))


@keys.command("install-headend")
@click.argument("kid")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False))
@json_option
def keys_install(kid: str, public_key: str, as_json: bool) -> None:
    """Install the head end's public key under KID (commands name it in `kid`)."""
    from edge_agent.headend.keys import KeyRing

    safe_name(kid, "KID")
    ring = KeyRing(_keys_config().headend_keys)
    try:
        target = ring.install(kid, Path(public_key))
    except OSError as exc:
        raise EdgeAgentError(f"cannot install {kid} in {ring.directory}: "
                             f"{exc.strerror}") from None
    emit({"kid": kid, "file": str(target)}, as_json,
         lambda: click.echo(f"head-end key {kid} installed as {target} (restart or SIGHUP "
                            "the daemon to use it)"))
