#!/usr/bin/env bash
# Install or upgrade edge-agent on a Debian / Raspberry Pi OS gateway (run as root).
#
#   sudo bash systemd/install.sh                       # from a checkout (pip needs PyPI)
#   sudo bash systemd/install.sh --wheelhouse DIR      # offline, from wheels (docs/deployment.md)
#   bash systemd/install.sh --root /tmp/gw [...]        # into a scratch tree (DESTDIR= works too)
#   --no-start: never enable or start the service.
#
# Running it again upgrades, and is safe to repeat.  The new code goes into a fresh virtualenv
# (/opt/edge-agent/releases/STAMP) while the old one keeps running; nothing changes unless it
# installs and accepts the configuration.  Then the database is backed up into
# /var/backups/edge-agent/STAMP/, /opt/edge-agent/current is switched to the new release, the
# vendor unit is replaced, systemd reloaded, and the service restarted if it was running.
#
# Never overwritten: /etc/edge-agent/agent.toml (the example is agent.toml.example), tariffs,
# keys, the database, and local unit changes in /etc/systemd/system/edge-agent.service.d/.
# The service is enabled only once `edge-agent config check` accepts agent.toml.
set -euo pipefail
SCRIPT=install.sh
SRC="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=systemd/common.sh
. "$SRC/systemd/common.sh"

WHEELHOUSE=""
NO_START=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE="${1#*=}"; shift ;;
    --no-start) NO_START=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
set_paths
[ -z "$WHEELHOUSE" ] || WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)" || die "no wheelhouse $WHEELHOUSE"
[ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or try it with --root DIR)"
CONFIG="$ETC/agent.toml"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# Python 3.11+ with venv; apt only when it is missing (an offline gateway usually has it).
ensure_python() {
  if python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null
  then return 0; fi
  real_root || die "python3 (3.11 or later) with venv is needed"
  note "installing python3-venv with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 \
    python3-venv >/dev/null || die "cannot install python3-venv (offline? install it first)"
}

# The system user edge-agent, in dialout for the serial ports.  Not under --root.
ensure_user() {
  if ! real_root; then
    note "skipped (not the real system): creating the system user $APP"
    return 0
  fi
  getent group "$APP" >/dev/null || groupadd --system "$APP"
  id -u "$APP" >/dev/null 2>&1 || useradd --system --gid "$APP" --home-dir "/var/lib/$APP" \
    --no-create-home --shell /usr/sbin/nologin "$APP"
  id -nG "$APP" | tr ' ' '\n' | grep -qx dialout || usermod -aG dialout "$APP"
}

# install -d with owner and group on the real system, mode only in a scratch tree.
make_dir() {  # MODE OWNER:GROUP DIR...
  local mode="$1" owner="$2"; shift 2
  if real_root; then
    install -d -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$@"
  else
    install -d -m "$mode" "$@"
  fi
  chmod "$mode" "$@"  # install -d leaves an existing directory's mode alone
}

put_file() {  # MODE OWNER:GROUP SOURCE TARGET
  if real_root; then
    install -m "$1" -o "${2%:*}" -g "${2#*:}" "$3" "$4"
  else
    install -m "$1" "$3" "$4"
  fi
}

# A fresh virtualenv with the new code; the running release is not touched.
build_release() {
  local release="$OPT/releases/$STAMP" n=1
  while [ -e "$release" ]; do release="$OPT/releases/$STAMP.$n"; n=$((n + 1)); done
  install -d -m 0755 "$OPT" "$OPT/releases"
  note "installing the code into $release"
  python3 -m venv "$release"
  local pip=("$release/bin/python" -m pip install -q --disable-pip-version-check)
  if [ -n "$WHEELHOUSE" ]; then
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" "$APP" \
      || { rm -rf "$release"; die "pip could not install $APP from $WHEELHOUSE"; }
  else
    "${pip[@]}" "$SRC" || { rm -rf "$release"; die "pip could not install $SRC"; }
  fi
  RELEASE="$release"
}

# 0 when the new code accepts agent.toml; prints its verdict either way.
config_ok() {
  [ -f "$CONFIG" ] || return 1
  # under --root the file is for another machine: its ports and groups are not checked here
  "$RELEASE/bin/edge-agent" --config "$CONFIG" config check ${ROOT:+--file-only} >&2
}

# The database path named by agent.toml ([agent] database), under ROOT.
database_path() {
  local db
  db="$(python3 - "$CONFIG" <<'EOF' 2>/dev/null || true
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("agent", {}).get("database", ""))
EOF
)"
  db="${db:-/var/lib/$APP/agent.db}"
  case "$db" in
    "$ROOT"/*) ;;
    /*) db="$ROOT$db" ;;
  esac
  echo "$db"
}

# Back the database up before the code changes: an online copy through the daemon's own
# `edge-agent backup` while it runs (SQLite's backup API: consistent under writes), a plain
# copy of the file and its WAL when it is stopped.
backup_database() {
  local db dest
  db="$(database_path)"
  [ -f "$db" ] || { note "no database at $db yet: nothing to back up"; return 0; }
  dest="$BACKUPS/$STAMP"
  make_dir 0700 root:root "$BACKUPS"
  install -d -m 0700 "$dest"
  if [ "$1" = running ]; then
    if ! "$RELEASE/bin/edge-agent" --config "$CONFIG" backup "$dest/$(basename "$db")" >&2; then
      note "edge-agent backup failed; copying with SQLite's backup API instead"
      "$RELEASE/bin/python" - "$db" "$dest/$(basename "$db")" <<'EOF' || die "backup failed"
import sqlite3, sys
source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
target = sqlite3.connect(sys.argv[2])
source.backup(target)
target.close()
EOF
    fi
  else
    cp -p "$db" "$dest/"
    [ ! -f "$db-wal" ] || cp -p "$db-wal" "$dest/"
  fi
  chmod -R go-rwx "$dest"
  note "database backed up into $dest ($(du -sh "$dest" | cut -f1))"
}

# Point /opt/edge-agent/current at the new release (atomically) and keep one previous release
# for a rollback; a venv left directly in /opt/edge-agent by an earlier installer goes.
switch_release() {
  ln -sfn "releases/$(basename "$RELEASE")" "$OPT/current.new"
  mv -T "$OPT/current.new" "$OPT/current"
  rm -rf "$OPT/bin" "$OPT/lib" "$OPT/lib64" "$OPT/include" "$OPT/share" "$OPT/pyvenv.cfg"
  local keep="$(basename "$RELEASE")" old
  for old in "$OPT"/releases/*; do
    case "$(basename "$old")" in "$keep"|"${OLD_RELEASE:-}") ;; *) rm -rf "$old" ;; esac
  done
  install -d -m 0755 "$(dirname "$LINK")"
  ln -sfn "/opt/$APP/current/bin/$APP" "$LINK"
}

install_config() {
  make_dir 0750 "root:$APP" "$ETC" "$ETC/tariffs" "$ETC/headend-keys" "$ETC/tls"
  put_file 0640 "root:$APP" "$SRC/config/agent.toml" "$CONFIG.example"
  for t in "$SRC"/config/tariffs/*.toml; do
    [ -f "$ETC/tariffs/$(basename "$t")" ] || put_file 0640 "root:$APP" "$t" "$ETC/tariffs/"
  done
}

# /var/lib/edge-agent is the service's alone (0700): the database and the private key.
install_state() {
  make_dir 0700 "$APP:$APP" "$STATE" "$STATE/keys"
  find "$STATE" -mindepth 1 \( -perm -g=r -o -perm -o=r \) -exec chmod go-rwx {} + 2>/dev/null \
    || true
  [ ! -f "$STATE/keys/gateway.key" ] || return 0
  local create=("$OPT/current/bin/$APP" keys create --out "$STATE/keys")
  if real_root; then runuser -u "$APP" -- "${create[@]}" >&2; else "${create[@]}" >&2; fi
}

install_system_files() {
  install -d -m 0755 "$(dirname "$UNIT")" "$(dirname "$MODULES")" "$DOC"
  install -m 0644 "$SRC/systemd/$APP.service" "$UNIT"
  # Load the USB serial drivers at boot, so their device groups exist when the unit's
  # DeviceAllow= is resolved (an adapter plugged in later then works without a restart).
  printf '# edge-agent: serial drivers for DeviceAllow=char-ttyUSB / char-ttyACM\nusbserial\ncdc_acm\n' \
    > "$MODULES"
  chmod 0644 "$MODULES"
  install -m 0644 "$SRC/README.md" "$SRC/docs/deployment.md" "$DOC/"
  retire_legacy_unit
}

next_steps() {
  note "not starting the service: $1"
  note "next: cp $CONFIG.example $CONFIG (if new); edit it; $APP config check;" \
       "then systemctl enable --now $APP"
}

start_if_appropriate() {  # was_running(yes|no) config_ok(yes|no)
  if [ -n "$NO_START" ]; then
    note "--no-start: leaving the service as it is"
  elif [ "$2" = no ]; then
    if [ -f "$CONFIG" ]; then next_steps "$CONFIG does not pass config check"
    else next_steps "no $CONFIG yet"; fi
  elif [ "$1" = yes ]; then
    sc start "$APP"
  elif ! service_enabled; then
    sc enable --now "$APP"
  else
    note "the service is enabled but was not running: left stopped (systemctl start $APP)"
  fi
  have_systemd || note "local unit changes: systemctl edit $APP (a drop-in in $DROPIN_DIR)"
}

main() {
  ensure_python
  ensure_user
  local upgrade=no was_running=no ok=no
  OLD_RELEASE="$(readlink "$OPT/current" 2>/dev/null || true)"
  OLD_RELEASE="${OLD_RELEASE#releases/}"
  if [ -e "$OPT/current" ] || [ -e "$OPT/pyvenv.cfg" ]; then upgrade=yes; fi
  if service_active; then was_running=yes; fi
  build_release
  if config_ok; then ok=yes; fi
  if [ "$was_running" = yes ] && [ "$ok" = no ]; then
    rm -rf "$RELEASE"
    die "the new code rejects $CONFIG (above); nothing changed, the running version stays." \
        "Fix the configuration, then run install.sh again"
  fi
  if [ "$upgrade" = yes ]; then
    backup_database "$([ "$was_running" = yes ] && echo running || echo stopped)"
  fi
  [ "$was_running" = no ] || sc stop "$APP"
  switch_release
  install_config
  install_state
  install_system_files
  sc daemon-reload
  start_if_appropriate "$was_running" "$ok"
  note "$([ "$upgrade" = yes ] && echo upgraded || echo installed):" \
       "$("$OPT/current/bin/$APP" --version 2>/dev/null || echo "$APP")"
}

main
