"""The architecture, pinned: import rules between the folders, where SQL runs, lazy imports.

An AST walk over every module (no import needed), plus one subprocess for what `import
edge_agent.cli` loads: the CLI's start-up time and the daemon's memory budget rely on
cryptography, pymodbus and paho staying off that path.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PREPAID = ("money", "records", "tariff", "billing", "policy", "enforcement")
PURE_GRID = ("lineloss", "anomaly", "clocksync", "backfill", "usage")
SQL_CALLS = {"execute", "executemany", "executescript"}


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports in functions count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_protocols_import_nothing_of_the_agent() -> None:
    bad = {name(p): sorted(m for m in imported(p) if m.split(".")[0] == "edge_agent")
           for p in modules("protocols")}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", PURE_PREPAID)
def test_pure_prepaid_modules_import_only_the_standard_library(module: str) -> None:
    path = ROOT / "edge_agent" / "prepaid" / f"{module}.py"
    allowed_agent = ("edge_agent.prepaid.", "edge_agent.errors")
    bad = []
    for imp in imported(path):
        top = imp.split(".")[0]
        if top == "edge_agent":
            if not imp.startswith(allowed_agent):
                bad.append(imp)
        elif top != "__future__" and top not in sys.stdlib_module_names:
            bad.append(imp)
        elif imp.startswith("edge_agent.prepaid.processor"):
            bad.append(imp)
    assert bad == []


@pytest.mark.parametrize("module", PURE_GRID)
def test_pure_grid_modules_import_only_the_standard_library_and_prepaid(module: str) -> None:
    path = ROOT / "edge_agent" / "grid" / f"{module}.py"
    allowed_agent = ("edge_agent.grid.", "edge_agent.prepaid.", "edge_agent.errors")
    bad = [imp for imp in imported(path)
           if (imp.split(".")[0] == "edge_agent" and not imp.startswith(allowed_agent))
           or (imp.split(".")[0] not in ("edge_agent", "__future__")
               and imp.split(".")[0] not in sys.stdlib_module_names)
           or imp.startswith("edge_agent.prepaid.processor")]
    assert bad == []


def test_only_the_store_executes_sql() -> None:
    offenders = []
    for path in modules("edge_agent"):
        if "store" in path.relative_to(ROOT / "edge_agent").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SQL_CALLS):
                offenders.append(f"{name(path)}:{node.lineno}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                if any(n.split(".")[0] in ("sqlite3", "sqlite_utils") for n in names):
                    offenders.append(f"{name(path)}:{node.lineno} imports sqlite")
    assert offenders == []


# folder -> folders of edge_agent it must not import (directly or lazily)
FORBIDDEN = {
    "prepaid": ("field", "headend", "runtime", "cli", "demo"),
    "store": ("field", "headend", "runtime", "cli", "demo"),
    "field": ("headend", "runtime", "cli", "demo", "store"),
    "headend": ("cli", "demo", "field"),
    "runtime": ("cli", "demo"),
    "grid": ("field", "headend", "runtime", "cli", "demo", "store"),
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folders_import_downwards_only(folder: str) -> None:
    bad = []
    for path in modules(f"edge_agent/{folder}"):
        for imp in imported(path):
            parts = imp.split(".")
            if parts[0] == "edge_agent" and len(parts) > 1 and parts[1] in FORBIDDEN[folder]:
                bad.append(f"{name(path)} imports {imp}")
    assert bad == []


def test_no_module_left_at_the_top_of_the_package() -> None:
    top = {p.stem for p in (ROOT / "edge_agent").glob("*.py")}
    assert top <= {"__init__", "__main__", "errors", "clock", "config", "demo"}


def test_the_cli_loads_no_heavy_dependency() -> None:
    code = ("import sys, edge_agent.cli; "
            "print(sorted(m for m in ('cryptography', 'pymodbus', 'paho', 'firmware_sim') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def loaded(code: str, *names: str) -> list[str]:
    """Which of `names` are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys; print(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_valid_frames_load_no_construct() -> None:
    """The daemon decodes and encodes valid frames on the fast path; `construct` (the
    definition of record, ~1 MB resident) loads on the first fault or reference call."""
    code = ("from protocols.dlt645 import frame\n"
            "f = frame.decode(bytes.fromhex('FEFE68010000000000689108333334337856343"
            "36C16'))\n"
            "frame.find_frame(f.encode())\n"
            "try:\n    frame.decode(b'\\x68\\x01')\nexcept frame.FrameError:\n    pass")
    assert loaded(code, "construct") == []
    assert loaded("from protocols.dlt645 import frame; frame.FRAME", "construct") == [
        "construct"]


def test_the_daemon_verifies_commands_without_key_serialization_modbus_or_construct(
        tmp_path: Path) -> None:
    """The daemon's modules, a head-end key ring and one verified command: cryptography is
    loaded (it verifies), its serialization module (SSH, RSA, EC, ciphers: ~1.2 MB) is not,
    nor pymodbus without a Modbus bus, nor construct, nor what paho's unused
    `urllib.request` would bring (http.client, email: ~2.4 MB)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    (tmp_path / "headend-1.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    code = (
        "import json\nfrom datetime import UTC, datetime, timedelta\n"
        "import edge_agent.runtime.assembly, edge_agent.runtime.daemon\n"
        "import edge_agent.headend.handler, edge_agent.headend.mqtt_link\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
        "from edge_agent.headend.commands import verify\n"
        "from edge_agent.headend.keys import KeyRing\n"
        "from edge_agent.headend.signing import envelope\n"
        f"key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex('{raw.hex()}'))\n"
        "payload = json.dumps(envelope('ping', {}, 'gw1', key, 'headend-1')).encode()\n"
        f"ring = KeyRing({str(tmp_path)!r})\n"
        "assert verify(payload, ring, 'gw1', datetime.now(UTC), timedelta(minutes=1)).type "
        "== 'ping'")
    assert loaded(code, "cryptography", "cryptography.hazmat.primitives.serialization",
                  "pymodbus", "construct", "http.client", "email") == ["cryptography"]


def test_urllib_request_deferred_by_the_link_still_works_when_used() -> None:
    code = ("import sys, edge_agent.headend.mqtt_link\n"
            "import paho.mqtt.client as client\n"
            "assert 'http.client' not in sys.modules\n"
            "from urllib.request import getproxies\n"
            "assert isinstance(getproxies(), dict)\n"
            "import urllib.request\n"
            "assert urllib.request.Request and client.urllib.request.proxy_bypass\n"
            "assert type(sys.modules['urllib.request']).__name__ == 'module'")
    assert loaded(code, "http.client") == ["http.client"]
