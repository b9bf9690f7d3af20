#!/usr/bin/env bash
# Benchmarks kmailops on this machine against a real, local Kubernetes API server.
#
#   scripts/bench.sh                  N=2000 Emails, 50 ms provider latency
#   N=10000 LATENCY_MS=20 scripts/bench.sh
#   BENCH_PROVIDER=postmark scripts/bench.sh   against a Postmark-compatible provider, which is asked
#                                              before each first send
#
# One run: builds the release binary and the bench tools, starts a private test API server
# (scripts/k8s-testenv.sh with its own folder and ports, so an instance others use is not
# touched), then measures
#   - the API write ceiling (status server-side applies of N Emails at the operator's
#     reconcile concurrency) and the provider ceiling (N sends to a local MailerSend-
#     compatible server with LATENCY_MS latency at its send concurrency),
#   - the protocol limit: per Email exactly the operator's requests (create the EmailDelivery,
#     send, record the outcome, write the Email's status, create the Event) at its concurrency
#     and through the same proxy, with no controller: the Emails/s the protocol itself allows
#     here (`protocol_limit_per_s`; `ratio_to_protocol` is the operator's share of it),
#   - `kmailops run` sending N Emails: Emails/s, creation->Sent p50/p99, API requests and
#     writes per Email, peak RSS, CPU seconds; run in SETS sets (default 5), each an
#     end-to-end round from an empty namespace (no Emails, ledger entries or Events) with a
#     fresh operator next to a protocol round (the first two sets protocol first, then
#     alternating, end to end first in the third), and Emails/s is the best of them, as the
#     protocol limit is the best of its rounds; `ratio_to_protocol` is the median over the
#     sets of each end-to-end round over the protocol round next to it (rounds next to each
#     other share the machine's hour), the best over the best is `ratio_to_protocol_best`,
#   - an open loop: Emails created at half the protocol limit for OPEN_LOOP_S seconds after
#     OPEN_LOOP_WARMUP_S seconds at that rate that are not measured, creation->Sent
#     p50/p99/max (`open_loop_p99_ms`): the latency under a steady stream, with when its
#     slowest Emails were created and the API server's garbage collections in that minute,
#   - a restart of the operator with those N Emails Sent: time to idle, writes, provider calls,
#   - micro-benchmarks of template rendering, message building and a send slot beside a parked
#     backlog (benches/render.rs).
# It prints a table and writes target/bench/e2e.json and target/bench/render.json; the
# operator logs are target/bench/operator-{1,2}.log. Everything listens on 127.0.0.1 only.
#
# Environment:
#   N                     Emails (default 2000)
#   LATENCY_MS            provider latency per send (default 50), and per look-up
#   BENCH_PROVIDER        the local provider: mailersend (default; nothing to look up) or
#                         postmark, which also answers the message search the operator makes
#                         before each first send (after LATENCY_MS too), so the report's
#                         look-ups per Email and Emails/s show what asking the provider costs
#   MAX_CONCURRENT_SENDS  the operator's --max-concurrent-sends (default 16, its default)
#   SETS                  sets of paired rounds in the whole bench (default 5, at least 2)
#   OPEN_LOOP_S           length of the open-loop run in seconds (default 60; 0 skips it)
#   OPEN_LOOP_WARMUP_S    seconds of the open loop before the measured Emails (default 10)
#   OPERATOR_BIN          measure this operator binary instead of building the current one
#                         (e.g. a release build of an older commit, for a before/after pair)
#   BUSY_CORES            processes that spin on the CPU for the whole measuring part
#                         (default 0): BUSY_CORES=1 measures a loaded machine (one core busy)
#   PAIRS                 instead of the end-to-end phases above, PAIRS sets of rounds back to back, each a
#                         protocol round from the bench's process, one from a process of its
#                         own, and the operator end to end; prints each set's ratios and their
#                         medians, writes target/bench/pairs.json (benches/e2e/pairs.rs). For
#                         telling a change from the machine's noise.
#   OPERATOR_BIN_B        with PAIRS: a second operator binary, run end to end in each set too
#   PROTOCOL_OPERATOR_WATCHES=1   a control: every protocol round also opens the operator's two
#                         watches (Emails, EmailDeliveries), to see what serving them costs the
#                         API server per Email; the limit it reports is then not the protocol's
#   BENCH_API_PORT, BENCH_ETCD_PORT   the private test server's ports (default 36443, 33790)
#   BENCH_TIMEOUT_S       upper bound of the measuring part (default 900 + SETS*N/10)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

N="${N:-2000}"
LATENCY_MS="${LATENCY_MS:-50}"
OUT="$REPO_ROOT/target/bench"
SETS="${SETS:-5}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-$((900 + SETS * N / 10))}"

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not '$N'"
[[ $LATENCY_MS =~ ^[0-9]+$ ]] || die "LATENCY_MS must be a number of milliseconds, not '$LATENCY_MS'"
[[ ${BENCH_PROVIDER:-mailersend} =~ ^(mailersend|postmark)$ ]] ||
  die "BENCH_PROVIDER must be mailersend or postmark, not '$BENCH_PROVIDER'"
command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"

# The private test server: its own run folder and ports.
export KMAILOPS_TESTENV_DIR="$OUT/testenv"
export KMAILOPS_TESTENV_API_PORT="${BENCH_API_PORT:-36443}"
export KMAILOPS_TESTENV_ETCD_PORT="${BENCH_ETCD_PORT:-33790}"
testenv() { "$REPO_ROOT/scripts/k8s-testenv.sh" "$@"; }

testenv install

log "building (release)"
# The bench tools first, then the operator: the binary measured is the plain release build.
E2E_BIN=$(cargo bench --bench e2e --bench render --no-run --message-format=json-render-diagnostics |
  grep '"name":"e2e"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[[ -x $E2E_BIN ]] || die "cargo did not report the e2e bench executable"
mkdir -p "$OUT"
if [[ -n ${OPERATOR_BIN:-} ]]; then
  # Another build of the operator (an older commit, for a before/after pair) under the same
  # bench: only the binary differs between the two runs.
  [[ -x $OPERATOR_BIN ]] || die "OPERATOR_BIN=$OPERATOR_BIN is not an executable"
  cp "$OPERATOR_BIN" "$OUT/kmailops"
else
  cargo build --release --bin kmailops
  # A copy, so that no later cargo command can swap the binary being measured.
  cp target/release/kmailops "$OUT/kmailops"
fi
KMAILOPS_BIN_B=""
if [[ -n ${OPERATOR_BIN_B:-} ]]; then
  [[ -x $OPERATOR_BIN_B ]] || die "OPERATOR_BIN_B=$OPERATOR_BIN_B is not an executable"
  cp "$OPERATOR_BIN_B" "$OUT/kmailops-b"
  KMAILOPS_BIN_B="$OUT/kmailops-b"
fi

log "micro-benchmarks: template rendering, message building, a send slot beside a parked backlog"
BENCH_OUT="$OUT" cargo bench --bench render

# The bench writes the pid of the operator it runs here, so that an interrupted or timed-out
# run never leaves one behind.
OPERATOR_PID_FILE="$OUT/operator.pid"
cleanup() {
  local pid
  if [[ -f $OPERATOR_PID_FILE ]]; then
    pid=$(cat "$OPERATOR_PID_FILE")
    # Only if that pid is still our operator (a stale file's pid may belong to anyone now).
    local exe
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [[ $exe == "$OUT/kmailops" || $exe == "$OUT/kmailops-b" ]]; then
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$OPERATOR_PID_FILE"
  fi
  testenv stop >/dev/null 2>&1 || true
}
# A fresh, empty server every run: a previous run's objects would change the numbers.
cleanup
trap cleanup EXIT
# The API server and etcd trace each garbage collection to their logs (one line a cycle): the
# open loop reports the API server's cycles that overlapped its minute next to its slowest
# Emails (benches/e2e/gc_trace.rs).
GODEBUG=gctrace=1 testenv start

BUSY_CORES="${BUSY_CORES:-0}"
[[ $BUSY_CORES =~ ^[0-9]+$ ]] || die "BUSY_CORES must be a number, not '$BUSY_CORES'"
BUSY_PIDS=()
for ((i = 0; i < BUSY_CORES; i++)); do
  # Plain spinning, at normal priority: it competes for the CPU as another tenant's work would.
  timeout "$TIMEOUT_S" sh -c 'while :; do :; done' &
  BUSY_PIDS+=("$!")
done
stop_busy() { for pid in "${BUSY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_busy; cleanup' EXIT

log "end to end: N=$N, LATENCY_MS=$LATENCY_MS, BUSY_CORES=$BUSY_CORES (at most $TIMEOUT_S s)"
BENCH_OUT="$OUT" BENCH_KUBECONFIG="$KMAILOPS_TESTENV_DIR/kubeconfig" KMAILOPS_BIN="$OUT/kmailops" \
  KMAILOPS_BIN_B="$KMAILOPS_BIN_B" PAIRS="${PAIRS:-0}" SETS="$SETS" BENCH_OPERATOR_PID_FILE="$OPERATOR_PID_FILE" N="$N" LATENCY_MS="$LATENCY_MS" BUSY_CORES="$BUSY_CORES" \
  timeout --kill-after=30 "$TIMEOUT_S" "$E2E_BIN"
