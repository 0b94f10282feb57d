#!/usr/bin/env bash
# Creates a private SoftHSMv2 token directory and initialises one token in it.
#   usage: hsm-test/softhsm-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]
# Writes DIR/softhsm2.conf (tokens in DIR/tokens) on first use, adds the token, and prints
# the line to eval:  export SOFTHSM2_CONF=DIR/softhsm2.conf
# Every test process should use its own DIR: processes sharing one token directory race.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [LABEL] [USER_PIN] [SO_PIN]" >&2
  exit 2
fi
dir=$1
label=${2:-kpki-test}
pin=${3:-1234}
so_pin=${4:-5678}
if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "softhsm2-util not found: run scripts/setup (apt-get install softhsm2)" >&2
  exit 1
fi
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$dir" >"$conf"
fi
SOFTHSM2_CONF=$conf softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
echo "export SOFTHSM2_CONF=$conf"
