"""`config check` checks what the file cannot say: ports, TLS files, the control group,
tariff ids, the metrics port; meters without a relay are warnings (issue 12)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from tests.helpers import agent_config


def check(path: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(path), "config", "check", *extra])
    return result.exit_code, result.stdout, result.stderr


def test_missing_port_tls_file_group_and_tariff_are_each_named(tmp_path: Path) -> None:
    path = agent_config(tmp_path, str(tmp_path / "ttyUSB3"), ["000000000001"],
                        tariff="no-such-tariff")
    text = path.read_text().replace(
        "[agent]\n", '[agent]\ncontrol_group = "no-such-group-12"\n', 1)
    text += f'\n[mqtt]\nenabled = true\nca_file = "{tmp_path / "ca.pem"}"\n'
    path.write_text(text)
    code, out, err = check(path)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "4 problem(s)" in err, out
    assert "bus bus1: port" in out and "ttyUSB3 does not exist" in out
    assert "[mqtt].ca_file" in out and "ca.pem does not exist" in out
    assert "no group named 'no-such-group-12'" in out
    assert "tariff 'no-such-tariff' is not in" in out
    code, out, _ = check(path, "--file-only")
    assert code == 2 and "ttyUSB3" not in out and "no-such-tariff" in out


def test_metrics_port_in_use_is_a_warning_and_a_privileged_one_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path = agent_config(tmp_path, "/dev/null", ["000000000001"])
        path.write_text(path.read_text().replace(
            "[agent]\n", f"[agent]\nmetrics_port = {taken.getsockname()[1]}\n", 1))
        code, out, _ = check(path, "--json")
    assert code == 0
    assert any("in use" in w for w in json.loads(out)["warnings"])


def test_meters_without_a_relay_are_warnings(tmp_path: Path) -> None:
    path = agent_config(tmp_path, "/dev/null", ["000000000001"], protocol="dlt645-1997")
    code, out, _ = check(path)
    assert code == 0, out
    assert "warning: meter 000000000001: DL/T 645-1997 has no remote relay" in out
