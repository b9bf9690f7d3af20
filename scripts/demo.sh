#!/usr/bin/env bash
# kmailops on this machine, no cluster needed: starts a real Kubernetes API server
# (apiextensions-apiserver on etcd, scripts/k8s-testenv.sh), installs the CRDs, starts a local
# SMTP catcher, applies examples/demo/, runs the operator, and shows the Emails and the
# messages that arrived. Run it again: it re-applies everything and restarts the operator, and
# shows that nothing is sent twice.
#
#   scripts/demo.sh          # run (or run again); leaves everything running for kubectl
#   eval "$(scripts/demo.sh env)"   # point the stock kubectl at it: kubectl get emails -n demo
#   scripts/demo.sh stop     # stop the operator, the kubectl front, the catcher, the API server
#
# kubectl talks to a loopback front (tools/testenv `serve`) that adds what the local API server
# lacks: discovery, the core group's Secrets, ConfigMaps, Namespaces and Events (for
# `kubectl describe`), and OpenAPI for the CRDs (`kubectl explain`).
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
FRONT_KUBECONFIG="$DEMO/kubeconfig"
# Bold headings on a terminal only; plain text in logs and pipes.
if [ -t 1 ]; then
  say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '\n== %s\n' "$*"; }
fi
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {
  local f="$1"
  if [ -f "$f" ]; then
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_pidfile "$DEMO/operator.pid"
  stop_pidfile "$DEMO/front.pid"
  stop_pidfile "$DEMO/catcher.pid"
  rm -f "$FRONT_KUBECONFIG"
  scripts/k8s-testenv.sh stop
  exit 0
fi

if [ "${1:-}" = "env" ]; then
  if ! running "$DEMO/front.pid" || [ ! -s "$FRONT_KUBECONFIG" ]; then
    echo "the demo is not running: start it with scripts/demo.sh" >&2
    exit 1
  fi
  echo "export KUBECONFIG=$FRONT_KUBECONFIG"
  exit 0
fi

mkdir -p "$DEMO"
say "installing what the demo needs (first run only)"
scripts/install-test-deps.sh
scripts/k8s-testenv.sh install

say "building kmailops"
# The operator as it ships (release); the helper tool in the debug profile, which shares its
# build with the test suite.
# DEMO_PROFILE=debug uses the debug build (quicker to build, slower to run).
PROFILE="${DEMO_PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --bin kmailops
else
  cargo build --locked --bin kmailops
fi
cargo build --locked --example kmailops-testenv
KMAILOPS="$ROOT/target/$PROFILE/kmailops"
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

# The test API server serves no Secrets and no discovery; this loopback front adds them (the
# tests' Secret shim plus discovery, Events and OpenAPI), so the operator binary and the stock
# kubectl both run unchanged against it. It stays up after this script for kubectl.
stop_pidfile "$DEMO/front.pid"
rm -f "$FRONT_KUBECONFIG"
"$TOOL" serve --out "$FRONT_KUBECONFIG" >"$DEMO/front.log" 2>&1 &
echo $! >"$DEMO/front.pid"
for _ in $(seq 1 50); do [ -s "$FRONT_KUBECONFIG" ] && break; sleep 0.1; done
[ -s "$FRONT_KUBECONFIG" ] || { echo "the kubectl front did not start: see $DEMO/front.log" >&2; exit 1; }

start_operator() {
  stop_pidfile "$DEMO/operator.pid"
  KUBECONFIG="$FRONT_KUBECONFIG" "$KMAILOPS" run --namespace demo \
    --leader-election=false --metrics-addr 127.0.0.1:18080 >>"$DEMO/operator.log" 2>&1 &
  echo $! >"$DEMO/operator.pid"
}

count_messages() { { find "$DEMO/maildir" -type f -path '*/new/*' 2>/dev/null || true; } | wc -l | tr -d ' '; }
before=$(count_messages)

say "applying examples/demo/"
"$TOOL" apply -f examples/demo

say "running the operator (log: $DEMO/operator.log)"
start_operator

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
start_operator
sleep 5
"$TOOL" emails -n demo --wait-seconds 30
again=$(count_messages)
echo "new messages after re-applying and restarting: $((again - after)) (exactly-once: expected 0)"

cat <<MSG

Everything keeps running: the API server, the SMTP catcher, the operator (namespace demo) and
a front for kubectl. Point the stock kubectl at it and look around:

  eval "\$(scripts/demo.sh env)"
  kubectl get emails -n demo                      # PHASE, TO, SENDER, MESSAGE-ID
  kubectl describe email welcome-ada -n demo        # conditions and Events
  kubectl explain email.spec.notAfter
  kubectl get esc -A

Send one of your own: write an Email in namespace demo (the demo sender is its default) and
  kubectl apply -f my-email.yaml && kubectl get email -n demo -w
It reaches Sent within seconds; the message lands in $DEMO/maildir/new.

Running scripts/demo.sh again shows that nothing is sent twice. To send the dry-run Email,
delete its kmailops.io/dry-run annotation (kubectl annotate email release-notes -n demo
kmailops.io/dry-run-) and it is sent, once. To see what it would look like first:
  $KMAILOPS render -f examples/demo --email demo/release-notes --format eml
Stop everything with: scripts/demo.sh stop
MSG
