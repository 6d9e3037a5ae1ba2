"""install.sh, the unit and uninstall.sh under a real systemd (PID 1 of a container).

tests/system/test_install.py checks the scripts into a scratch root with a recorder for
systemctl; this one boots the machine's own Debian under systemd-nspawn (a tmpfs root, the
host's /usr read-only, a private network) and runs nspawn/scenario.sh as a unit there: a
fresh install, a configuration, a refused reload, an upgrade while running, a SIGKILL, a
configuration error and an uninstall, each with the real systemctl, journald and the real
hardening of edge-agent.service (User=, DeviceAllow=, MemoryDenyWriteExecute=, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent / "nspawn"
MASKED = ("mosquitto.service", "postgresql.service", "postgresql@15-main.service",
          "console-getty.service")


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root (CI runs as root)")
    nspawn = shutil.which("systemd-nspawn")
    assert nspawn, "scripts/setup.sh installs systemd-container"
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), str(REPO)],
                   check=True)
    results = tmp_path_factory.mktemp("results")
    shutil.copy(HERE / "scenario.sh", results / "scenario.sh")
    args = [nspawn, "--quiet", "--directory=/", "--volatile=yes", "--register=no",
            "--keep-unit", "--private-network", "--overlay=/etc::/etc", "--overlay=/usr::/usr",
            f"--machine=ea-test-{os.getpid()}",
            f"--bind-ro={REPO}:/src", f"--bind-ro={wheels}:/wheels",
            f"--bind={results}:/results",
            f"--bind-ro={HERE / 'scenario.service'}:/etc/systemd/system/ea-scenario.service",
            "--boot", "systemd.wants=ea-scenario.service",
            *(f"systemd.mask={unit}" for unit in MASKED)]
    boot = subprocess.run(args, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    log = (results / "scenario.log").read_text() if (results / "scenario.log").exists() else ""
    found = results / "facts"
    assert found.exists(), f"the scenario never ran: {boot.stdout[-3000:]}{boot.stderr}"
    pairs = dict(line.split("=", 1) for line in found.read_text().splitlines() if "=" in line)
    assert pairs.get("done") == "1", log[-3000:]
    pairs["_log"] = log
    for name in ("journal.txt", "journal_reload.txt", "journal_err.txt", "status.json",
                 "verify.txt"):
        path = results / name
        pairs[f"_{name}"] = path.read_text() if path.exists() else ""
    return pairs


def test_a_fresh_install_starts_nothing_and_the_unit_verifies(facts: dict[str, str]) -> None:
    assert facts["install_rc"] == "0", facts["_log"]
    assert facts["enabled_after_install"] != "enabled"
    assert facts["active_after_install"] == "inactive"
    assert facts["verify_rc"] == "0", facts["_verify.txt"]
    assert facts["key_mode"] == "600 edge-agent"


def test_a_valid_configuration_enables_and_starts_the_hardened_service(
        facts: dict[str, str]) -> None:
    assert facts["configured_rc"] == "0", facts["_log"]
    assert facts["active_after_config"] == "active", facts["_journal.txt"]
    assert facts["enabled_after_config"] == "enabled"
    assert facts["main_user"] == "edge-agent"
    assert facts["status_rc"] == "0", facts["_log"]
    status = json.loads(facts["_status.json"])
    assert status["daemon"]["running"] is True
    assert [b["state"] for b in status["buses"]] == ["ok"], status
    assert facts["db_mode"] == "600 edge-agent"
    assert facts["state_dir_mode"] == "700 edge-agent"


def test_a_bad_reload_is_refused_at_err_and_the_service_runs_on(facts: dict[str, str]) -> None:
    assert facts["reload_rc"] == "0"
    assert facts["active_after_bad_reload"] == "active"
    assert facts["same_pid_after_bad_reload"] == "yes"
    assert "reload refused" in facts["_journal_reload.txt"], facts["_journal.txt"]


def test_an_upgrade_backs_up_and_restarts_on_the_new_release(facts: dict[str, str]) -> None:
    assert facts["upgrade_rc"] == "0", facts["_log"]
    assert facts["active_after_upgrade"] == "active"
    assert facts["restarted_on_upgrade"] == "yes"
    assert facts["new_release"] == "yes"
    assert int(facts["backups"]) >= 1


def test_systemd_restarts_a_killed_daemon(facts: dict[str, str]) -> None:
    assert facts["active_after_kill"] == "active", facts["_journal.txt"]
    assert facts["new_pid_after_kill"] == "yes"
    assert int(facts["restarts_after_kill"]) >= 1


def test_a_configuration_error_exits_2_and_is_not_restarted(facts: dict[str, str]) -> None:
    assert facts["state_after_bad_config"] == "failed", facts["_journal.txt"]
    assert facts["exit_status_bad_config"] == "2"
    assert facts["restarts_bad_config"] == "0"  # (a manual restart resets the counter)
    # why it stopped is at priority err, where `journalctl -p err` looks
    assert any(line.startswith("error:") and "not_a_key" in line
               for line in facts["_journal_err.txt"].splitlines()), facts["_journal.txt"]


def test_uninstall_keeps_the_data_and_purge_removes_it(facts: dict[str, str]) -> None:
    assert facts["uninstall_rc"] == "0", facts["_log"]
    assert facts["unit_after_uninstall"] == "gone"
    assert facts["active_after_uninstall"] != "active"
    assert facts["db_after_uninstall"] == "kept"
    assert facts["purge_rc"] == "0"
    assert facts["db_after_purge"] == "gone"
