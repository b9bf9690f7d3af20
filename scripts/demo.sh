#!/usr/bin/env bash
# kmailops on this machine, no cluster needed: starts a real Kubernetes API server
# (apiextensions-apiserver on etcd, scripts/k8s-testenv.sh), installs the CRDs, starts a local
# SMTP catcher, applies examples/demo/, runs the operator, and shows the Emails and the
# messages that arrived. Run it again: it re-applies everything and restarts the operator, and
# shows that nothing is sent twice.
#
#   scripts/demo.sh          # run (or run again)
#   scripts/demo.sh stop     # stop the API server and the catcher it left running
#
# Everything listens on 127.0.0.1 only. Its state lives in target/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="$ROOT/target/demo"
export KMAILOPS_TESTENV_DIR="$DEMO/testenv"
export KMAILOPS_TESTENV_API_PORT="${DEMO_API_PORT:-46443}"
export KMAILOPS_TESTENV_ETCD_PORT="${DEMO_ETCD_PORT:-43790}"
SMTP_PORT=2525
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_pidfile() {
  local f="$1"
  if [ -f "$f" ]; then
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_pidfile "$DEMO/catcher.pid"
  scripts/k8s-testenv.sh stop
  exit 0
fi

mkdir -p "$DEMO"
say "installing what the demo needs (first run only)"
scripts/install-test-deps.sh
scripts/k8s-testenv.sh install

say "building kmailops"
# The operator as it ships (release); the helper tool in the debug profile, which shares its
# build with the test suite.
cargo build --release --locked --bin kmailops
cargo build --locked --example kmailops-testenv
KMAILOPS="$ROOT/target/release/kmailops"
TOOL="$ROOT/target/debug/examples/kmailops-testenv"

say "starting the local Kubernetes API server"
scripts/k8s-testenv.sh start
export KUBECONFIG="$KMAILOPS_TESTENV_DIR/kubeconfig"
"$KMAILOPS" crds --apply

say "starting the SMTP catcher on 127.0.0.1:$SMTP_PORT (messages land in $DEMO/maildir)"
if ! { [ -f "$DEMO/catcher.pid" ] && kill -0 "$(cat "$DEMO/catcher.pid")" 2>/dev/null; }; then
  python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$DEMO/maildir" \
    >"$DEMO/catcher.log" 2>&1 &
  echo $! >"$DEMO/catcher.pid"
fi

# The test API server serves no Secrets; this loopback proxy adds them (as the tests' shim
# does), so the operator binary runs unchanged.
"$TOOL" serve --out "$DEMO/operator-kubeconfig" >"$DEMO/proxy.log" 2>&1 &
PROXY_PID=$!
OPERATOR_PID=""
cleanup() {
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  kill "$PROXY_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 50); do [ -s "$DEMO/operator-kubeconfig" ] && break; sleep 0.1; done

count_messages() { { find "$DEMO/maildir" -type f -path '*/new/*' 2>/dev/null || true; } | wc -l | tr -d ' '; }
before=$(count_messages)

say "applying examples/demo/"
"$TOOL" apply -f examples/demo

say "running the operator (log: $DEMO/operator.log)"
KUBECONFIG="$DEMO/operator-kubeconfig" "$KMAILOPS" run --namespace demo \
  --leader-election=false --metrics-addr 127.0.0.1:18080 >>"$DEMO/operator.log" 2>&1 &
OPERATOR_PID=$!

say "Emails (kubectl get emails -n demo)"
"$TOOL" emails -n demo --wait-seconds 60

say "messages the catcher received"
for f in $({ find "$DEMO/maildir" -type f -path '*/new/*' 2>/dev/null || true; } | sort); do
  awk 'BEGIN{IGNORECASE=1} /^(From|To|Cc|Subject):/ {printf "  %s\n", $0} /^$/ {exit}' "$f"
  echo "  --"
done
after=$(count_messages)
echo "new messages in this run: $((after - before)) (total $after)"

say "applying the same manifests again and restarting the operator"
"$TOOL" apply -f examples/demo >/dev/null
kill "$OPERATOR_PID" 2>/dev/null || true
wait "$OPERATOR_PID" 2>/dev/null || true
KUBECONFIG="$DEMO/operator-kubeconfig" "$KMAILOPS" run --namespace demo \
  --leader-election=false --metrics-addr 127.0.0.1:18080 >>"$DEMO/operator.log" 2>&1 &
OPERATOR_PID=$!
sleep 5
"$TOOL" emails -n demo --wait-seconds 30
again=$(count_messages)
echo "new messages after re-applying and restarting: $((again - after)) (exactly-once: expected 0)"

cat <<MSG

The API server and the SMTP catcher keep running, so running scripts/demo.sh again shows that
nothing is sent twice. To send the dry-run Email, delete its kmailops.io/dry-run annotation in
examples/demo/20-preview.yaml and run scripts/demo.sh again: it is sent, once. To see what it
would look like first:
  target/release/kmailops render -f examples/demo --email demo/release-notes --format eml
Stop everything with: scripts/demo.sh stop
MSG
