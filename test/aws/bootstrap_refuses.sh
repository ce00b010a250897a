#!/usr/bin/env bash
# bootstrap_refuses.sh SOURCE_DIR: jobscripts/aws/bootstrap.sh fails in one line naming
# the problem: a wrong --role, and (on any host that is not the Ubuntu 24.04 image it is
# written for, such as this one) the image check. Its log goes to a temporary file.
set -euo pipefail
script=$1/jobscripts/aws/bootstrap.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# expect PATTERN ARGS...: exit status 1, one stderr line matching PATTERN, the same line last in the log.
expect() {
  local pattern=$1 rc=0 err
  shift
  err=$(MICS_BOOTSTRAP_LOG=$tmp/log bash "$script" "$@" 2>&1 >/dev/null) || rc=$?
  echo "bootstrap_refuses: $*: rc $rc: $err"
  [ "$rc" = 1 ] || { echo "bootstrap_refuses: FAIL: exit status $rc, expected 1" >&2; exit 1; }
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || { echo "bootstrap_refuses: FAIL: more than one line" >&2; exit 1; }
  grep -Eq "^bootstrap.sh: error: $pattern" <<<"$err" || { echo "bootstrap_refuses: FAIL: line does not say '$pattern'" >&2; exit 1; }
  [ "$(tail -n 1 "$tmp/log")" = "$err" ] || { echo "bootstrap_refuses: FAIL: the log does not end with the error line" >&2; exit 1; }
}
expect "--role must be head or compute" --role login
expect "unknown argument '--colour'" --role head --colour
if [ "$(. /etc/os-release 2>/dev/null; echo "${ID:-} ${VERSION_ID:-}")" != "ubuntu 24.04" ] && [ "$(id -u)" = 0 ]; then
  expect "this script is for Ubuntu 24.04" --role compute --shared "$tmp"
fi
echo "bootstrap_refuses: PASS"
