# Shared by install.sh and uninstall.sh (sourced, not run).
#
# Every path is under $ROOT ("" on a real gateway), so both scripts can be tried on a temporary
# tree (--root DIR or DESTDIR=DIR) without touching the machine.  systemctl is only called on a
# real install on a machine booted with systemd; otherwise each call is printed as skipped.
# SYSTEMCTL=PROGRAM forces the calls through PROGRAM even then: the test suite uses it to
# record what a run would have asked of systemd.

ROOT="${DESTDIR:-}"
APP=edge-agent

note() { echo "${SCRIPT}: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# Set the paths once ROOT is known (after the options are parsed).
set_paths() {
  ROOT="${ROOT%/}"
  OPT="$ROOT/opt/$APP"
  ETC="$ROOT/etc/$APP"
  STATE="$ROOT/var/lib/$APP"
  BACKUPS="$ROOT/var/backups/$APP"
  UNIT="$ROOT/usr/lib/systemd/system/$APP.service"
  LOCAL_UNIT="$ROOT/etc/systemd/system/$APP.service"
  DROPIN_DIR="$ROOT/etc/systemd/system/$APP.service.d"
  MODULES="$ROOT/usr/lib/modules-load.d/$APP.conf"
  LINK="$ROOT/usr/local/bin/$APP"
  DOC="$ROOT/usr/share/doc/$APP"
  if [ -n "${SYSTEMCTL:-}" ]; then
    SYSTEMD_WHY=""
  elif [ -n "$ROOT" ]; then
    SYSTEMD_WHY="--root given"
  elif [ ! -d /run/systemd/system ]; then
    SYSTEMD_WHY="systemd is not running (not PID 1)"
  else
    SYSTEMCTL=systemctl
    SYSTEMD_WHY=""
  fi
}

have_systemd() { [ -z "$SYSTEMD_WHY" ]; }

# systemctl ARGS..., or a note saying it was skipped (then it succeeds).
sc() {
  if have_systemd; then
    "$SYSTEMCTL" "$@"
  else
    note "skipped (${SYSTEMD_WHY}): systemctl $*"
  fi
}

# True when the service runs now; false when it does not or systemd cannot be asked.
service_active() { have_systemd && "$SYSTEMCTL" is-active --quiet "$APP"; }
service_enabled() { have_systemd && "$SYSTEMCTL" is-enabled --quiet "$APP"; }

# Accounts and ownership are only touched on the real system, as root.
real_root() { [ -z "$ROOT" ] && [ "$(id -u)" -eq 0 ]; }

# sha256 of every unit an earlier install.sh copied verbatim to /etc/systemd/system/: such a
# copy shadows the vendor unit but holds no local edit, so it may be removed.
LEGACY_UNIT_SUMS="fd9a3649468651adde17502b1fb28704a166197fd8d9dfc82330b637e3430bbd"

# Remove /etc/systemd/system/edge-agent.service when an earlier installer wrote it unchanged;
# a locally edited one is kept (it would be data loss) with a warning that it hides upgrades.
retire_legacy_unit() {
  [ -f "$LOCAL_UNIT" ] || return 0
  local sum
  sum="$(sha256sum "$LOCAL_UNIT" | cut -d' ' -f1)"
  case " $LEGACY_UNIT_SUMS " in
    *" $sum "*)
      rm -f "$LOCAL_UNIT"
      note "removed $LOCAL_UNIT (an unedited copy left by an earlier installer)" ;;
    *)
      note "WARNING: $LOCAL_UNIT has local edits and hides the vendor unit;" \
           "move the edits into a drop-in (systemctl edit $APP) and delete it" ;;
  esac
}
