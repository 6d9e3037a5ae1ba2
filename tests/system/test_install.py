"""install.sh / uninstall.sh into a scratch root: install, upgrade with a backup, uninstall, purge.

A recorder stands in for systemctl (SYSTEMCTL=...): the test checks what the scripts would
have asked of systemd.  The same scripts under a real systemd: test_install_systemd.py.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout and its dependencies as wheels (pip cache or PyPI), as docs/deployment.md."""
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), str(REPO)],
                   check=True)
    return out


def _recorder(tmp_path: Path, active: bool) -> tuple[Path, Path]:
    log = tmp_path / "systemctl.log"
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\n"
                    f'echo "$*" >> {log}\n'
                    f'case "$1" in is-active) exit {0 if active else 3} ;;'
                    " is-enabled) exit 1 ;; esac\nexit 0\n")
    fake.chmod(0o755)
    return fake, log


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["bash", str(REPO / "systemd" / script), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _valid_config(root: Path) -> str:
    text = (root / "etc/edge-agent/agent.toml.example").read_text()
    for old in ("/etc/edge-agent", "/var/lib/edge-agent"):
        text = text.replace(f'"{old}', f'"{root}{old}')
    return text


def test_install_upgrade_uninstall_purge(tmp_path: Path, wheelhouse: Path) -> None:
    root = tmp_path / "root"
    etc, state = root / "etc/edge-agent", root / "var/lib/edge-agent"

    # Fresh install: no systemctl at all under --root, and no agent.toml is invented.
    out = _run("install.sh", "--root", str(root), "--wheelhouse", str(wheelhouse))
    assert "skipped (--root given): systemctl daemon-reload" in out
    assert "not starting the service: no" in out
    assert (etc / "agent.toml.example").is_file() and not (etc / "agent.toml").exists()
    assert (root / "usr/lib/systemd/system/edge-agent.service").read_text() == (
        REPO / "systemd/edge-agent.service").read_text()
    exe = root / "opt/edge-agent/current/bin/edge-agent"
    assert subprocess.run([str(exe), "--version"], capture_output=True).returncode == 0
    assert _mode(state) in (0o700, 0o750) and _mode(state / "keys") == 0o700
    assert _mode(state / "keys/gateway.key") & 0o077 == 0
    assert _mode(etc) == 0o750 and _mode(etc / "agent.toml.example") & 0o007 == 0
    assert not (root / "etc/systemd/system/edge-agent.service.d").exists()

    # An invalid agent.toml: the upgrade goes through, the service is never enabled/started.
    fake, log = _recorder(tmp_path, active=False)
    (etc / "agent.toml").write_text(_valid_config(root).replace("baud = 2400", "baud = 2401"))
    (state / "agent.db").write_bytes(b"SQLite format 3\x00 fake database")
    (state / "agent.db-wal").write_bytes(b"fake wal")
    dropin = root / "etc/systemd/system/edge-agent.service.d/override.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nEnvironment=LOCAL=1\n")
    before = (etc / "agent.toml").read_text()
    out = _run("install.sh", "--root", str(root), "--wheelhouse", str(wheelhouse),
               env={"SYSTEMCTL": str(fake)})
    calls = log.read_text().splitlines()
    assert "daemon-reload" in calls
    assert not [c for c in calls if c.startswith(("enable", "start", "restart"))], calls
    assert "does not pass config check" in out
    [backup] = (root / "var/backups/edge-agent").iterdir()
    assert (backup / "agent.db").read_bytes() == (state / "agent.db").read_bytes()
    assert (backup / "agent.db-wal").read_bytes() == b"fake wal"
    assert _mode(root / "var/backups/edge-agent") == 0o700
    assert (etc / "agent.toml").read_text() == before
    assert dropin.read_text() == "[Service]\nEnvironment=LOCAL=1\n"
    assert len(list((root / "opt/edge-agent/releases").iterdir())) == 2  # current + previous

    # A valid agent.toml and a running daemon: online backup, stop, switch, start.
    log.unlink()
    fake, log = _recorder(tmp_path, active=True)
    (etc / "agent.toml").write_text(_valid_config(root))
    (state / "agent.db").unlink()
    (state / "agent.db-wal").unlink()
    db = sqlite3.connect(state / "agent.db")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()
    db.close()
    _run("install.sh", "--root", str(root), "--wheelhouse", str(wheelhouse),
         env={"SYSTEMCTL": str(fake)})
    calls = log.read_text().splitlines()
    assert calls.index("stop edge-agent") < calls.index("daemon-reload") < calls.index(
        "start edge-agent"), calls
    newest = sorted((root / "var/backups/edge-agent").iterdir())[-1]
    copy = sqlite3.connect(newest / "agent.db")
    assert copy.execute("SELECT x FROM t").fetchall() == [(42,)]
    copy.close()
    assert len(list((root / "opt/edge-agent/releases").iterdir())) == 2

    # Uninstall keeps the data; --purge removes it.
    _run("uninstall.sh", "--root", str(root))
    assert not (root / "opt/edge-agent").exists()
    assert not (root / "usr/lib/systemd/system/edge-agent.service").exists()
    assert not (root / "usr/local/bin/edge-agent").is_symlink()
    assert (etc / "agent.toml").read_text() == _valid_config(root)
    assert (state / "agent.db").exists() and (state / "keys/gateway.key").exists()
    assert (root / "var/backups/edge-agent").exists() and dropin.exists()
    _run("uninstall.sh", "--root", str(root), "--purge")
    for gone in (etc, state, root / "var/backups/edge-agent", dropin.parent):
        assert not gone.exists(), gone
