#!/usr/bin/env bash
# `scripts/bench serve`: issuance throughput and latency of the `kpki serve` daemon (release
# build) per CA algorithm, with two baselines measured in the same run on the same machine:
#   - the raw PKCS#11 rate of the same token key: 2 threads, one session each, C_Sign loop
#     (target/release/kpki-raw-sign);
#   - `cfssl serve` (Debian golang-cfssl) with a file CA key of the same algorithm, TLS with
#     the same kind of server certificate and mutual TLS; and kpki serve with a file CA key
#     too, the same kind of key as cfssl's.
# Load: target/release/kpki-load, one P-256 CSR (openssl) POSTed over persistent keep-alive
# mTLS connections; a short warm-up run first. Also reports the daemon's peak RSS (VmHWM).
# Each CA key is on a fresh SoftHSM token. Not a test: prints figures next to the targets.
# Knobs: KPKI_BENCH_REQUESTS (per measurement, default 20000), KPKI_BENCH_WARMUP (default
# 2000), KPKI_BENCH_SECS (raw C_Sign seconds, default 5), KPKI_BENCH_ALGS (default
# "RSA-2048 ECDSA-P256"), KPKI_BENCH_POOL (the daemon's signing.pool_size, default 4),
# KPKI_BENCH_MODULE (default SoftHSMv2), KPKI_BENCH_IDLE_WAIT (seconds
# to wait before each measurement for the machine to go idle, default 120; 0: no wait),
# KPKI_BENCH_PERF=DIR (an extra run per algorithm with `perf record` on the daemon:
# perf-<alg>.data and perf-<alg>.txt in DIR; KPKI_BENCH_PERF_CALLGRAPH: perf's --call-graph,
# default dwarf; the binaries are then built with the bench profile, which keeps symbols).
# Every server and the load generator share this machine's CPUs; the output says how much
# CPU each used per certificate and how much other processes took meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${KPKI_BENCH_REQUESTS:-20000}
warmup=${KPKI_BENCH_WARMUP:-2000}
raw_secs=${KPKI_BENCH_SECS:-5}
idle_wait=${KPKI_BENCH_IDLE_WAIT:-120}
algs=${KPKI_BENCH_ALGS:-RSA-2048 ECDSA-P256}
module=${KPKI_BENCH_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
signer=kubernetes.io/kube-apiserver-client

for tool in openssl jq curl cfssl softhsm2-util; do
  command -v "$tool" >/dev/null || { echo "bench serve: $tool not found (scripts/setup)" >&2; exit 1; }
done

# With KPKI_BENCH_PERF the bench profile (the release build with its symbols kept) lets perf
# name every function; it builds into the same directory.
if [ -n "${KPKI_BENCH_PERF:-}" ]; then
  cargo build --profile bench -p kpki -p kpki-e2e --bins --locked -q
else
  cargo build --release -p kpki -p kpki-e2e --bins --locked -q
fi
bin=$PWD/target/release

loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d)
daemon_pid=""
cfssl_pid=""
perf_pid=""
stop() { # pid: SIGTERM, then SIGKILL after 10 s
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  [ -z "$perf_pid" ] || { kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; }
  stop "$daemon_pid"
  stop "$cfssl_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench serve: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# The callers' CA (P-256) issues the servers' certificate and the load generator's client
# certificate (CN=bench); both servers use the same certificate and trust the same CA.
ossl() { openssl "$@" 2>>"$work/openssl.log" || die "openssl $1 failed: $(tail -5 "$work/openssl.log")"; }
p256_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; chmod 600 "$1"; }
p256_key "$work/callers-ca.key"
ossl req -x509 -new -key "$work/callers-ca.key" -subj "/CN=kpki bench callers" -days 2 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,digitalSignature" \
  -out "$work/callers-ca.crt"
leaf() { # name subject extensions
  p256_key "$work/$1.key"
  ossl req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
  printf '%s\n' "$3" >"$work/$1.ext"
  ossl x509 -req -in "$work/$1.csr" -CA "$work/callers-ca.crt" -CAkey "$work/callers-ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$work/$1.ext" -out "$work/$1.crt"
}
leaf server "/CN=bench-server" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
leaf bench "/CN=bench" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

# The request: one P-256 CSR, as both APIs' bodies.
p256_key "$work/user.key"
ossl req -new -key "$work/user.key" -subj "/CN=bench-user" -out "$work/user.csr"
jq -n --rawfile csr "$work/user.csr" --arg s "$signer" '{csr: $csr, signer_name: $s}' >"$work/kpki-body.json"
jq -n --rawfile csr "$work/user.csr" '{certificate_request: $csr}' >"$work/cfssl-body.json"
printf 1234 >"$work/pin"
chmod 600 "$work/pin"

# load URL BODY CONNECTIONS REQUESTS [mtls|tls]: one kpki-load --json report on stdout.
load() {
  local auth=(--cert "$work/bench.crt" --key "$work/bench.key")
  [ "${5:-mtls}" = mtls ] || auth=()
  "$bin/kpki-load" --url "$1" --ca "$work/callers-ca.crt" "${auth[@]}" --body-file "$2" \
    --connections "$3" --requests "$4" --json
}
# measure KEY PID URL BODY CONNECTIONS [mtls|tls]: a load of $requests that must be answered
# 200 throughout; stores the report in R[KEY], the CPU seconds the server (PID) and the load
# generator spent in R[KEY.srv_cpu] and R[KEY.load_cpu], the run's wall seconds in R[KEY.wall]
# and the CPU seconds every other process on the machine used meanwhile in R[KEY.other].
clk=$(getconf CLK_TCK)
cpu_s() { awk -v t="$clk" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
busy_s() { awk -v t="$clk" '/^cpu / { printf "%.3f", ($2 + $3 + $4 + $7 + $8) / t }' /proc/stat; }
# wait_idle: waits (at most $idle_wait s) for a second in which the machine's CPUs are at
# least 95% idle, so other work does not share the CPUs with the next measurement.
wait_idle() {
  local t0=$SECONDS a b
  while [ $((SECONDS - t0)) -lt "$idle_wait" ]; do
    a=$(busy_s)
    sleep 1
    b=$(busy_s)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { exit !(b - a < 0.05 * n) }' && return 0
  done
  [ "$idle_wait" -eq 0 ] || log "the machine stayed busy for ${idle_wait} s; measuring anyway"
}
measure() {
  local key=$1 pid=$2 url=$3 s0 s1 b0 b1 out TIMEFORMAT='%3U %3S %3R'
  wait_idle
  s0=$(cpu_s "$pid")
  b0=$(busy_s)
  { time load "$url" "$4" "$5" "$requests" "${6:-mtls}" >"$work/load.json" 2>"$work/load.err"; } 2>"$work/load.time" ||
    die "kpki-load $url failed: $(tail -3 "$work/load.err")"
  b1=$(busy_s)
  s1=$(cpu_s "$pid")
  out=$(cat "$work/load.json")
  if [ "$(jq -r '.ok == .requests' <<<"$out")" != true ]; then
    die "$url: not every request succeeded: $(jq -c '{requests, ok, by_status, transport_errors, first_error}' <<<"$out")"
  fi
  R[$key]=$out
  R[$key.srv_cpu]=$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')
  R[$key.load_cpu]=$(awk '{ print $1 + $2 }' "$work/load.time")
  R[$key.wall]=$(awk '{ print $3 }' "$work/load.time")
  R[$key.other]=$(awk -v b="$b1" -v a="$b0" -v s="${R[$key.srv_cpu]}" -v l="${R[$key.load_cpu]}" \
    'BEGIN { o = b - a - s - l; print (o > 0 ? o : 0) }')
}
# warm URL BODY CONNECTIONS [mtls|tls]: a short run that must be answered 200 throughout.
warm() {
  local out
  out=$(load "$1" "$2" "$3" "$warmup" "${4:-mtls}" 2>&1) || die "kpki-load $1 failed: $out"
  [ "$(jq -r '.ok == .requests' <<<"$out")" = true ] ||
    die "$1: not every request succeeded: $(jq -c '{requests, ok, by_status, transport_errors, first_error}' <<<"$out")"
}
wait_tcp() { # port pid: true once the port accepts connections, false if pid exits
  local i
  for i in $(seq 300); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

declare -A R # results by "<alg>.<field>"

# start_kpki ALG DIR KEY-URI: writes DIR/serve.toml for the CA of DIR/k8s with its key at
# KEY-URI, starts the daemon (daemon_pid) and waits until it is ready; sets kpki_url.
start_kpki() {
  local alg=$1 d=$2 uri=$3 port ops i
  port=$(free_port)
  ops=$(free_port)
  cat >"$d/serve.toml" <<EOF
[listen]
address = "127.0.0.1:$port"
ops_address = "127.0.0.1:$ops"
cert = "$work/server.crt"
key = "$work/server.key"
client_cas = ["$work/callers-ca.crt"]

[cas.ca]
cert = "$d/k8s/pki/ca.crt"
key = "$uri"

[audit]
path = "$d/audit.jsonl"

[signing]
pool_size = ${KPKI_BENCH_POOL:-4}

[[policy]]
name = "bench"
callers = { cn = "bench" }
signers = ["$signer"]
EOF
  "$bin/kpki" serve --config "$d/serve.toml" </dev/null >/dev/null 2>"$d/serve.log" &
  daemon_pid=$!
  for i in $(seq 300); do
    kill -0 "$daemon_pid" 2>/dev/null || die "kpki serve ($alg) exited: $(tail -20 "$d/serve.log")"
    curl -fsS -o /dev/null "http://127.0.0.1:$ops/readyz" 2>/dev/null && break
    [ "$i" -lt 300 ] || die "kpki serve ($alg) not ready after 30 s: $(tail -20 "$d/serve.log")"
    sleep 0.1
  done
  kpki_url="https://127.0.0.1:$port/v1/sign"
}

# bench_kpki_file ALG DIR: the daemon with its CA key in a file (software signing), as
# cfssl's is: the same kind of key on both sides of that comparison.
bench_kpki_file() {
  local alg=$1 d=$2
  mkdir -p "$d"
  "$bin/kpki" init --dir "$d/k8s" --node-name cp1 --advertise-address 127.0.0.1 \
    --encryption-algorithm "$alg" >"$d/init.log" 2>&1 || die "kpki init ($alg, file CA): $(tail -5 "$d/init.log")"
  start_kpki "$alg" "$d" "file:$d/k8s/pki/ca.key"
  log "$alg: kpki serve with a file CA key, warm-up ($warmup requests)"
  warm "$kpki_url" "$work/kpki-body.json" 8
  log "$alg: kpki serve with a file CA key, 8 connections, $requests requests"
  measure "$alg.f8" "$daemon_pid" "$kpki_url" "$work/kpki-body.json" 8
  stop "$daemon_pid"
  daemon_pid=""
}

bench_kpki() { # alg dir
  local alg=$1 d=$2 uri
  mkdir -p "$d"
  eval "$(bash hsm-test/softhsm-token.sh "$d/hsm" bench 1234 5678)"
  uri="pkcs11:token=bench;object=ca?module-path=$module&pin-source=file:$work/pin"
  "$bin/kpki" init --dir "$d/k8s" --node-name cp1 --advertise-address 127.0.0.1 \
    --encryption-algorithm "$alg" --key "ca=$uri" >"$d/init.log" 2>&1 || die "kpki init ($alg): $(tail -5 "$d/init.log")"
  start_kpki "$alg" "$d" "$uri"
  local url=$kpki_url
  log "$alg: kpki serve warm-up ($warmup requests)"
  warm "$url" "$work/kpki-body.json" 8
  log "$alg: kpki serve, 8 connections, $requests requests"
  measure "$alg.k8" "$daemon_pid" "$url" "$work/kpki-body.json" 8
  if [ "$alg" = ECDSA-P256 ]; then
    log "$alg: kpki serve, 64 connections, $requests requests"
    warm "$url" "$work/kpki-body.json" 64
    measure "$alg.k64" "$daemon_pid" "$url" "$work/kpki-body.json" 64
  fi
  R[$alg.rss_kib]=$(awk '/^VmHWM:/ {print $2}' "/proc/$daemon_pid/status")
  if [ -n "${KPKI_BENCH_PERF:-}" ]; then
    # An extra, unmeasured run with the daemon sampled: call graphs in $KPKI_BENCH_PERF.
    mkdir -p "$KPKI_BENCH_PERF"
    log "$alg: perf record of kpki serve, 8 connections, $requests requests"
    perf record -F 499 --call-graph "${KPKI_BENCH_PERF_CALLGRAPH:-dwarf}" -p "$daemon_pid" -o "$KPKI_BENCH_PERF/perf-$alg.data" >"$d/perf.log" 2>&1 &
    perf_pid=$!
    sleep 1
    load "$url" "$work/kpki-body.json" 8 "$requests" >/dev/null
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf_pid=""
    # Self time by library and symbol, then inclusive time by symbol (where the time goes).
    {
      perf report -i "$KPKI_BENCH_PERF/perf-$alg.data" --no-children --sort dso -g none --stdio
      perf report -i "$KPKI_BENCH_PERF/perf-$alg.data" --no-children --sort dso,symbol -g none --percent-limit 0.3 --stdio
      perf report -i "$KPKI_BENCH_PERF/perf-$alg.data" --children --sort symbol -g none --percent-limit 1 --stdio
    } 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/ *$//' >"$KPKI_BENCH_PERF/perf-$alg.txt" || true
  fi
  stop "$daemon_pid"
  daemon_pid=""

  # The raw baseline, with the daemon stopped: same token, same key.
  log "$alg: raw C_Sign, 2 threads, $raw_secs s"
  local TIMEFORMAT='%3U %3S %3R' b0 b1
  wait_idle
  b0=$(busy_s)
  { time "$bin/kpki-raw-sign" --module "$module" --token bench --pin-file "$work/pin" \
    --label ca --threads 2 --seconds "$raw_secs" >"$d/raw.json"; } 2>"$d/raw.time" ||
    die "kpki-raw-sign ($alg) failed: $(cat "$d/raw.time")"
  b1=$(busy_s)
  R[$alg.raw]=$(cat "$d/raw.json")
  R[$alg.raw.srv_cpu]=$(awk '{ print $1 + $2 }' "$d/raw.time")
  R[$alg.raw.wall]=$(awk '{ print $3 }' "$d/raw.time")
  R[$alg.raw.other]=$(awk -v b="$b1" -v a="$b0" -v s="${R[$alg.raw.srv_cpu]}" 'BEGIN { o = b - a - s; print (o > 0 ? o : 0) }')
}

bench_cfssl() { # alg dir
  local alg=$1 d=$2 port mode out
  mkdir -p "$d"
  if [ "$alg" = RSA-2048 ]; then
    ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/ca.key"
  else
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key"
  fi
  chmod 600 "$d/ca.key"
  ossl req -x509 -new -key "$d/ca.key" -subj "/CN=cfssl bench CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$d/ca.crt"
  cat >"$d/config.json" <<'EOF'
{"signing": {"default": {"usages": ["digital signature", "key encipherment", "client auth"], "expiry": "8760h"}}}
EOF
  # Mutual TLS first; plain TLS when this cfssl's mTLS does not work with the load generator
  # (kpki-load speaks HTTPS only, so there is no plain-HTTP fallback).
  for mode in mtls tls; do
    local extra=()
    [ "$mode" = mtls ] && extra=(-mutual-tls-ca "$work/callers-ca.crt")
    port=$(free_port)
    cfssl serve -address 127.0.0.1 -port "$port" -ca "$d/ca.crt" -ca-key "$d/ca.key" \
      -config "$d/config.json" -tls-cert "$work/server.crt" -tls-key "$work/server.key" \
      "${extra[@]}" -loglevel 5 </dev/null >"$d/cfssl-$mode.log" 2>&1 &
    cfssl_pid=$!
    if ! wait_tcp "$port" "$cfssl_pid"; then
      log "$alg: cfssl serve ($mode) did not start: $(tail -5 "$d/cfssl-$mode.log")"
      stop "$cfssl_pid"; cfssl_pid=""
      continue
    fi
    local url="https://127.0.0.1:$port/api/v1/cfssl/sign"
    log "$alg: cfssl serve ($mode) warm-up ($warmup requests)"
    out=$(load "$url" "$work/cfssl-body.json" 8 "$warmup" "$mode" 2>&1) || true
    if [ "$(jq -r '.ok == .requests' <<<"$out" 2>/dev/null)" != true ]; then
      log "$alg: cfssl serve with $mode failed: $(jq -c '{by_status, transport_errors, first_error}' <<<"$out" 2>/dev/null || echo "$out")"
      stop "$cfssl_pid"; cfssl_pid=""
      continue
    fi
    log "$alg: cfssl serve ($mode), 8 connections, $requests requests"
    measure "$alg.cfssl" "$cfssl_pid" "$url" "$work/cfssl-body.json" 8 "$mode"
    R[$alg.cfssl_mode]=$mode
    stop "$cfssl_pid"; cfssl_pid=""
    return 0
  done
  R[$alg.cfssl_mode]=none
}

for alg in $algs; do
  case $alg in RSA-2048 | ECDSA-P256) ;; *) die "unknown algorithm $alg" ;; esac
  bench_kpki "$alg" "$work/kpki-$alg"
  bench_kpki_file "$alg" "$work/kpki-file-$alg"
  bench_cfssl "$alg" "$work/cfssl-$alg"
done

# The tables and the targets.
num() { jq -r "$1 // empty" <<<"${2:-null}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else printf "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
verdict() { if "$@"; then echo MET; else echo MISSED; fi; }

echo
echo "kpki serve vs raw PKCS#11 C_Sign vs cfssl serve: $requests requests per measurement (after $warmup warm-up),"
echo "one P-256 CSR, keep-alive HTTP/1.1, $(nproc) CPUs shared by server and load generator; CA keys on SoftHSMv2 ($module)."
echo
hdr='%-11s %5s | %9s %7s %7s | %10s %8s | %9s %7s %7s %5s | %10s | %8s\n'
row='%-11s %5s | %9.0f %7.2f %7.2f | %10s %8s | %9s %7s %7s %5s | %10s | %8.1f\n'
# shellcheck disable=SC2059
printf "$hdr" algorithm conns "kpki/s" "p50 ms" "p99 ms" "raw 2thr/s" kpki/raw "cfssl/s" "p50 ms" "p99 ms" tls kpki/cfssl "RSS MiB"
for alg in $algs; do
  k=${R[$alg.k8]}
  raw=$(num .rate "${R[$alg.raw]}")
  rss=$(awk -v k="${R[$alg.rss_kib]}" 'BEGIN { print k / 1024 }')
  c=${R[$alg.cfssl]:-null}
  crate=$(num .rate "$c"); cp50=$(num .p50_ms "$c"); cp99=$(num .p99_ms "$c")
  # shellcheck disable=SC2059
  printf "$row" "$alg" 8 "$(num .rate "$k")" "$(num .p50_ms "$k")" "$(num .p99_ms "$k")" \
    "$(printf '%.0f' "$raw")" "$(ratio "$(num .rate "$k")" "$raw")" \
    "$(printf '%.0f' "${crate:-0}")" "$(printf '%.2f' "${cp50:-0}")" "$(printf '%.2f' "${cp99:-0}")" "${R[$alg.cfssl_mode]}" \
    "$(ratio "$(num .rate "$k")" "${crate:-0}")" "$rss"
  if [ -n "${R[$alg.k64]:-}" ]; then
    k=${R[$alg.k64]}
    # shellcheck disable=SC2059
    printf "$row" "$alg" 64 "$(num .rate "$k")" "$(num .p50_ms "$k")" "$(num .p99_ms "$k")" \
      "$(printf '%.0f' "$raw")" "$(ratio "$(num .rate "$k")" "$raw")" - - - - - "$rss"
  fi
done
echo "(RSS: the daemon's VmHWM after all its loads; tls: how cfssl was driven, mtls = -mutual-tls-ca with a client certificate)"

echo
echo "CPU time per certificate (per signature for raw C_Sign): process user+sys / count; cores = CPU time / wall time;"
echo "other = cores used meanwhile by every other process on the machine (anything above ~0.05 skews the rates above)."
hdr='%-11s %-17s | %11s %9s | %12s %10s | %11s\n'
# shellcheck disable=SC2059
printf "$hdr" algorithm run "srv us/req" "srv cores" "load us/req" "load cores" "other cores"
cpu_row() { # alg label key count
  local key=$3 n=$4 wall srv ld
  [ -n "${R[$key]:-}" ] || return 0
  wall=${R[$key.wall]}
  srv=${R[$key.srv_cpu]}
  ld=${R[$key.load_cpu]:-}
  # shellcheck disable=SC2059
  printf "$hdr" "$1" "$2" \
    "$(awk -v s="$srv" -v n="$n" 'BEGIN { printf "%.0f", 1e6 * s / n }')" \
    "$(awk -v s="$srv" -v w="$wall" 'BEGIN { printf "%.2f", s / w }')" \
    "$([ -z "$ld" ] && echo - || awk -v s="$ld" -v n="$n" 'BEGIN { printf "%.0f", 1e6 * s / n }')" \
    "$([ -z "$ld" ] && echo - || awk -v s="$ld" -v w="$wall" 'BEGIN { printf "%.2f", s / w }')" \
    "$(awk -v o="${R[$key.other]}" -v w="$wall" 'BEGIN { printf "%.2f", o / w }')"
}
# cpu_per ALG KEY: the daemon's CPU microseconds per request of one run.
cpu_per() { awk -v s="${R[$2.srv_cpu]}" -v n="$(num .requests "${R[$2]}")" 'BEGIN { printf "%.0f", 1e6 * s / n }'; }
raw_per() { awk -v s="${R[$1.raw.srv_cpu]}" -v n="$(num .signatures "${R[$1.raw]}")" 'BEGIN { printf "%.0f", 1e6 * s / n }'; }
for alg in $algs; do
  cpu_row "$alg" "kpki serve c=8" "$alg.k8" "$requests"
  cpu_row "$alg" "kpki serve c=64" "$alg.k64" "$requests"
  cpu_row "$alg" "kpki file key c=8" "$alg.f8" "$requests"
  cpu_row "$alg" "raw C_Sign 2 thr" "$alg.raw" "$(num .signatures "${R[$alg.raw]}")"
  cpu_row "$alg" "cfssl serve c=8" "$alg.cfssl" "$requests"
done
echo "(raw C_Sign: the whole kpki-raw-sign process, including module load, login and a 20-signature warm-up per thread)"
for alg in $algs; do
  r=$(raw_per "$alg"); k=$(cpu_per "$alg" "$alg.k8")
  echo "$alg: daemon CPU per certificate $k us = raw C_Sign $r us + $((k - r)) us for everything else;" \
    "CPU-bound ceiling of kpki/raw on this host: $(ratio "$r" "$k")"
  if [ -n "${R[$alg.cfssl]:-}" ]; then
    c=$(cpu_per "$alg" "$alg.cfssl")
    echo "$alg: CPU per certificate vs cfssl's $c us (file key): kpki with the key on the token $(ratio "$k" "$c")" \
      "(its C_Sign alone $(ratio "$r" "$c")), kpki with a file key $([ -n "${R[$alg.f8]:-}" ] && ratio "$(cpu_per "$alg" "$alg.f8")" "$c" || echo n/a)"
  fi
done
echo "load average: $loadavg_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
for alg in $algs; do
  for key in "$alg.k8" "$alg.k64" "$alg.f8" "$alg.raw" "$alg.cfssl"; do
    [ -n "${R[$key]:-}" ] || continue
    o=$(awk -v o="${R[$key.other]}" -v w="${R[$key.wall]}" 'BEGIN { printf "%.2f", o / w }')
    if awk -v o="$o" 'BEGIN { exit !(o > 0.10) }'; then
      echo "WARNING: other processes used $o cores during $key: its rate (and ratios with it) is understated; rerun on an idle machine"
    fi
  done
done

echo
echo "Targets:"
t() { printf '  %-54s %-26s %s\n' "$1" "$2" "$3"; }
for alg in $algs; do
  k8=$(num .rate "${R[$alg.k8]}")
  p99=$(num .p99_ms "${R[$alg.k8]}")
  rss=$(awk -v k="${R[$alg.rss_kib]}" 'BEGIN { printf "%.1f", k / 1024 }')
  if [ "$alg" = RSA-2048 ]; then
    raw=$(num .rate "${R[$alg.raw]}")
    crate=$(num .rate "${R[$alg.cfssl]:-null}")
    t "$alg: kpki >= 66% of raw 2-thread C_Sign" "$(ratio "$k8" "$raw") of $(printf '%.0f' "$raw")/s" \
      "$(verdict ge "$k8" "$(awk -v r="$raw" 'BEGIN { print 0.66 * r }')")"
    t "$alg: kpki above cfssl's rate" "$(printf '%.0f' "$k8")/s vs $(printf '%.0f' "${crate:-0}")/s" \
      "$(if [ -n "$crate" ]; then verdict awk -v a="$k8" -v b="$crate" 'BEGIN { exit !(a > b) }'; else echo "n/a (cfssl not measured)"; fi)"
    t "$alg: p99 <= 10 ms at 8 connections" "$(printf '%.2f' "$p99") ms" "$(verdict ge 10 "$p99")"
  else
    t "$alg: >= 5,000 certificates/s (8 connections)" "$(printf '%.0f' "$k8")/s" "$(verdict ge "$k8" 5000)"
    if [ -n "${R[$alg.k64]:-}" ]; then
      k64=$(num .rate "${R[$alg.k64]}")
      t "$alg: >= 5,000 certificates/s (64 connections)" "$(printf '%.0f' "$k64")/s" "$(verdict ge "$k64" 5000)"
    fi
    k=$(cpu_per "$alg" "$alg.k8"); r=$(raw_per "$alg")
    t "$alg: <= 100 us CPU per certificate outside C_Sign" "$((k - r)) us" "$(verdict ge 100 "$((k - r))")"
    if [ -n "${R[$alg.cfssl]:-}" ]; then
      c=$(cpu_per "$alg" "$alg.cfssl")
      t "$alg: CPU per certificate <= 0.6x cfssl's (token key)" "$k us vs $c us" \
        "$(verdict awk -v a="$k" -v b="$c" 'BEGIN { exit !(a <= 0.6 * b) }')"
      if [ -n "${R[$alg.f8]:-}" ]; then
        f=$(cpu_per "$alg" "$alg.f8")
        t "$alg: CPU per certificate <= 0.6x cfssl's (file keys)" "$f us vs $c us" \
          "$(verdict awk -v a="$f" -v b="$c" 'BEGIN { exit !(a <= 0.6 * b) }')"
      fi
    fi
  fi
  t "$alg: daemon peak RSS <= 40 MiB" "$rss MiB" "$(verdict ge 40 "$rss")"
done
for alg in $algs; do
  [ "${R[$alg.cfssl_mode]}" = mtls ] || echo "note: cfssl serve ($alg) measured with ${R[$alg.cfssl_mode]} (mutual TLS did not work)"
done
