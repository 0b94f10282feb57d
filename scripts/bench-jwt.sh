#!/usr/bin/env bash
# Benchmark of the service-account token signer: `Sign` RPCs/s and p50/p99 over the unix
# socket with KPKI_BENCH_CALLERS concurrent callers (default 16) against `kpki serve
# --jwt-only` with a P-256 key on SoftHSM, next to a raw C_Sign loop on the same key
# (1 and 2 threads) measured in the same run. KPKI_BENCH_SECS seconds per cell (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${KPKI_BENCH_SECS:-5}
callers=${KPKI_BENCH_CALLERS:-16}
cargo build --release --locked -q -p kpki -p kpki-e2e --bins
bin=$PWD/target/release
module=/usr/lib/softhsm/libsofthsm2.so
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
eval "$(bash hsm-test/softhsm-token.sh "$work/hsm" jwt 1234 5678)"
printf 1234 >"$work/pin"; chmod 600 "$work/pin"
uri="pkcs11:token=jwt;object=sa?module-path=$module&pin-source=file:$work/pin"
"$bin/kpki" keys create "$uri" -a ECDSA-P256 >/dev/null
cat >"$work/serve.toml" <<TOML
[jwt]
socket = "$work/jwt.sock"
signing_key = "$uri"
TOML
KPKI_LOG=warn "$bin/kpki" serve --jwt-only --config "$work/serve.toml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 200); do [ -S "$work/jwt.sock" ] && break; sleep 0.05; done
[ -S "$work/jwt.sock" ] || { cat "$work/serve.log" >&2; exit 1; }

field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
raw1=$("$bin/kpki-raw-sign" --module "$module" --token jwt --pin-file "$work/pin" --label sa --threads 1 --seconds "$secs" --message-bytes 600 | field rate)
raw2=$("$bin/kpki-raw-sign" --module "$module" --token jwt --pin-file "$work/pin" --label sa --threads 2 --seconds "$secs" --message-bytes 600 | field rate)
out=$("$bin/kpki-jwt-bench" --socket "$work/jwt.sock" --callers "$callers" --seconds "$secs")
rate=$(echo "$out" | field rate); p50=$(echo "$out" | field p50_ms); p99=$(echo "$out" | field p99_ms)
errors=$(echo "$out" | field errors)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
printf '%-28s %12s\n' "ES256 on SoftHSM" ""
printf '  %-26s %12.0f /s\n' "raw C_Sign, 1 thread" "$raw1"
printf '  %-26s %12.0f /s\n' "raw C_Sign, 2 threads" "$raw2"
printf '  %-26s %12.0f /s   (%.0f%% of raw 2-thread; target >= 5000/s)\n' "Sign RPCs, $callers callers" "$rate" "$(awk -v a="$rate" -v b="$raw2" 'BEGIN{print 100*a/b}')"
printf '  %-26s %12.3f ms\n' "p50" "$p50"
printf '  %-26s %12.3f ms  (target <= 5 ms)\n' "p99" "$p99"
printf '  %-26s %12s\n' "errors" "$errors"
printf '  %-26s %12s KiB\n' "daemon peak RSS" "$rss"
