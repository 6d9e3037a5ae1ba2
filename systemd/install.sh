#!/usr/bin/env bash
# Install edge-agent on a Debian / Raspberry Pi OS gateway (run as root from a checkout).
#   sudo bash systemd/install.sh
# Creates the edge-agent user (in dialout), a virtualenv in /opt/edge-agent, the config in
# /etc/edge-agent (kept if present), the unit, and enables the service.
set -euo pipefail
cd "$(dirname "$0")/.."
apt-get update -qq
apt-get install -y -qq python3 python3-venv >/dev/null
id -u edge-agent >/dev/null 2>&1 || useradd --system --home /var/lib/edge-agent \
  --shell /usr/sbin/nologin --groups dialout edge-agent
python3 -m venv /opt/edge-agent
/opt/edge-agent/bin/pip install -q .
ln -sf /opt/edge-agent/bin/edge-agent /usr/local/bin/edge-agent
install -d -m 0750 -o root -g edge-agent /etc/edge-agent /etc/edge-agent/tariffs \
  /etc/edge-agent/headend-keys
[ -f /etc/edge-agent/agent.toml ] || install -m 0640 -o root -g edge-agent config/agent.toml \
  /etc/edge-agent/agent.toml
for t in config/tariffs/*.toml; do
  [ -f "/etc/edge-agent/tariffs/$(basename "$t")" ] || install -m 0640 -g edge-agent "$t" \
    /etc/edge-agent/tariffs/
done
install -d -m 0750 -o edge-agent -g edge-agent /var/lib/edge-agent /var/lib/edge-agent/keys
[ -f /var/lib/edge-agent/keys/gateway.key ] || sudo -u edge-agent /usr/local/bin/edge-agent \
  keys create --out /var/lib/edge-agent/keys
install -m 0644 systemd/edge-agent.service /etc/systemd/system/edge-agent.service
systemctl daemon-reload
edge-agent --config /etc/edge-agent/agent.toml config check
systemctl enable --now edge-agent
systemctl --no-pager status edge-agent || true
