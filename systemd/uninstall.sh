#!/usr/bin/env bash
# Remove edge-agent from a gateway (run as root).
#
#   sudo bash systemd/uninstall.sh            # stop, disable, remove the code and the unit
#   sudo bash systemd/uninstall.sh --purge    # ... and the configuration, database, keys,
#                                             #     backups and local unit drop-ins
#   bash systemd/uninstall.sh --root DIR      # in a scratch tree (DESTDIR= works too)
#
# Without --purge, /etc/edge-agent, /var/lib/edge-agent (database, keys) and
# /var/backups/edge-agent stay, so install.sh later carries on where this gateway stopped.
# The system user edge-agent is kept either way (files elsewhere may still belong to it).
set -euo pipefail
SCRIPT=uninstall.sh
# shellcheck source=systemd/common.sh
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

PURGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
set_paths
[ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or try it with --root DIR)"

sc disable --now "$APP" || note "the service could not be stopped or disabled (not installed?)"
# The link only when it is ours (points into /opt/edge-agent).
if [ -L "$LINK" ] && case "$(readlink "$LINK")" in "/opt/$APP/"*) true ;; *) false ;; esac
then rm -f "$LINK"; fi
rm -rf "$OPT" "$DOC"
rm -f "$UNIT" "$MODULES"
retire_legacy_unit
if [ -n "$PURGE" ]; then
  rm -rf "$ETC" "$STATE" "$BACKUPS" "$DROPIN_DIR" "$ROOT/run/$APP"
  rm -f "$LOCAL_UNIT"
  note "purged: configuration, database, keys, backups and unit drop-ins"
else
  note "kept: $ETC, $STATE (database, keys), $BACKUPS; --purge removes them"
fi
sc daemon-reload
sc reset-failed "$APP" 2>/dev/null || true
note "removed $APP"
