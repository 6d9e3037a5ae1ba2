#!/bin/bash
# Runs inside a systemd-nspawn container booted with a real systemd (PID 1), as a oneshot unit
# (tests/system/test_install_systemd.py).  It installs, configures, reloads, upgrades, kills,
# breaks and uninstalls edge-agent with the real scripts and the real unit, and writes what it
# saw as `name=value` lines into /results/facts for the test to judge.  /src is the checkout
# (read-only), /wheels the wheelhouse.  Whatever happens, the container powers off at the end.
set -u
R=/results
exec >"$R/scenario.log" 2>&1
trap 'echo "done=1" >>"$R/facts"; systemctl poweroff --no-block' EXIT
fact() { printf '%s=%s\n' "$1" "$2" >>"$R/facts"; }
prop() { systemctl show -p "$1" --value edge-agent; }
wait_active() {  # until the unit is active (Type=notify: READY=1 was sent) or 60 s
  for _ in $(seq 120); do
    [ "$(systemctl is-active edge-agent)" = active ] && return 0
    sleep 0.5
  done
  return 1
}
EA=/usr/local/bin/edge-agent

# 1. A fresh install without agent.toml: code, unit and keys, nothing started.
bash /src/systemd/install.sh --wheelhouse /wheels; fact install_rc $?
fact enabled_after_install "$(systemctl is-enabled edge-agent 2>&1)"
fact active_after_install "$(systemctl is-active edge-agent 2>&1)"
systemd-analyze verify edge-agent.service >"$R/verify.txt" 2>&1; fact verify_rc $?
fact key_mode "$(stat -c '%a %U' /var/lib/edge-agent/keys/gateway.key)"

# 2. Two simulated meters behind a TCP serial server; a valid agent.toml; install again:
#    now the configuration passes, so the service is enabled and started.
"$EA" sim -n 2 --tcp 7700 --baud 9600 --time-scale 60 >"$R/sim.log" 2>&1 &
sleep 3
cat >/etc/edge-agent/agent.toml <<'TOML'
[agent]
gateway_id = "gw-nspawn"
database = "/var/lib/edge-agent/agent.db"
timezone = "Asia/Shanghai"
tariff_dir = "/etc/edge-agent/tariffs"
control_socket = "/run/edge-agent/control.sock"
control_group = "edge-agent"

[[bus]]
name = "bus1"
port = "socket://127.0.0.1:7700"
baud = 9600
response_timeout = 0.5
gap = 0.0
retries = 1
poll_interval = 1

[[meter]]
address = "000000000001"
bus = "bus1"
account = "A1"
tariff = "flat"

[[meter]]
address = "000000000002"
bus = "bus1"
account = "A2"
tariff = "flat"
TOML
chmod 0640 /etc/edge-agent/agent.toml; chgrp edge-agent /etc/edge-agent/agent.toml
bash /src/systemd/install.sh --wheelhouse /wheels; fact configured_rc $?
wait_active; fact active_after_config "$(systemctl is-active edge-agent)"
fact enabled_after_config "$(systemctl is-enabled edge-agent 2>&1)"
fact main_user "$(ps -o user= -p "$(prop MainPID)")"
sleep 4
"$EA" --config /etc/edge-agent/agent.toml status --json >"$R/status.json" 2>"$R/status.err"
fact status_rc $?
fact db_mode "$(stat -c '%a %U' /var/lib/edge-agent/agent.db)"
fact state_dir_mode "$(stat -c '%a %U' /var/lib/edge-agent)"

# 3. A reload with a broken tariff is refused; the daemon runs on.
cp /etc/edge-agent/tariffs/flat.toml /root/flat.toml
printf 'id = "flat"\ntype = "nonsense"\n' >/etc/edge-agent/tariffs/flat.toml
pid="$(prop MainPID)"
systemctl reload edge-agent; fact reload_rc $?
sleep 3
fact active_after_bad_reload "$(systemctl is-active edge-agent)"
fact same_pid_after_bad_reload "$([ "$(prop MainPID)" = "$pid" ] && echo yes || echo no)"
journalctl -u edge-agent -p err -o cat --no-pager >"$R/journal_reload.txt"
cp /root/flat.toml /etc/edge-agent/tariffs/flat.toml

# 4. An upgrade while it runs: a backup first, then a restart on the new release.
pid="$(prop MainPID)"
release="$(readlink /opt/edge-agent/current)"
bash /src/systemd/install.sh --wheelhouse /wheels; fact upgrade_rc $?
wait_active; fact active_after_upgrade "$(systemctl is-active edge-agent)"
fact restarted_on_upgrade "$([ "$(prop MainPID)" != "$pid" ] && echo yes || echo no)"
fact new_release "$([ "$(readlink /opt/edge-agent/current)" != "$release" ] && echo yes || echo no)"
fact backups "$(find /var/backups/edge-agent -name agent.db | wc -l)"

# 5. SIGKILL: systemd restarts it (Restart=always, RestartSec=5).
pid="$(prop MainPID)"
systemctl kill -s KILL edge-agent
sleep 8
wait_active; fact active_after_kill "$(systemctl is-active edge-agent)"
fact restarts_after_kill "$(prop NRestarts)"
fact new_pid_after_kill "$([ "$(prop MainPID)" != "$pid" ] && echo yes || echo no)"

# 6. A configuration error on restart: exit 2, and the unit stays failed (no restart loop).
cp /etc/edge-agent/agent.toml /root/agent.toml
sed -i 's/^\[agent\]$/[agent]\nnot_a_key = 1/' /etc/edge-agent/agent.toml
systemctl restart edge-agent; fact restart_bad_rc $?
sleep 12
fact state_after_bad_config "$(systemctl is-active edge-agent)"
fact exit_status_bad_config "$(prop ExecMainStatus)"
fact restarts_bad_config "$(prop NRestarts)"
journalctl -u edge-agent -o short --no-pager >"$R/journal.txt"
journalctl -u edge-agent -p err -o cat --no-pager >"$R/journal_err.txt"
cp /root/agent.toml /etc/edge-agent/agent.toml

# 7. Uninstall keeps data; --purge removes it.
bash /src/systemd/uninstall.sh; fact uninstall_rc $?
fact unit_after_uninstall "$([ -e /usr/lib/systemd/system/edge-agent.service ] && echo present || echo gone)"
fact active_after_uninstall "$(systemctl is-active edge-agent 2>&1)"
fact db_after_uninstall "$([ -e /var/lib/edge-agent/agent.db ] && echo kept || echo gone)"
bash /src/systemd/uninstall.sh --purge; fact purge_rc $?
fact db_after_purge "$([ -e /var/lib/edge-agent/agent.db ] && echo kept || echo gone)"
