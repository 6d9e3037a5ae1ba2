#!/usr/bin/env bash
# Set up everything edge-agent needs on a Debian machine: Debian packages (mosquitto for the
# local broker, systemd for systemd-analyze, systemd-container for the install test under a
# real systemd, python3-venv) and a virtualenv .venv holding the package and its test tools.
# Idempotent: quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# systemd-nspawn boots a real systemd for tests/system/test_install_systemd.py
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing Debian packages: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
