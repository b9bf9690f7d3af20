#!/usr/bin/env bash
# Runs the whole kmailops test suite on this machine, fresh or not:
# installs what the tests need, starts the local Kubernetes API server (apiextensions-apiserver
# on etcd), runs every test, and stops what it started.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --test crds     # extra arguments go to `cargo test`
#   CHURN_SEQUENCES=50 scripts/test.sh --test churn   # a long GitOps churn run (default: 2
#                                   # sequences; CHURN_SEED=<n> replays a printed seed)
#
# tests/churn.rs starts and stops an API server of its own (target/testenv-churn, ports
# KMAILOPS_CHURN_API_PORT / KMAILOPS_CHURN_ETCD_PORT, default 26643 / 23990), which it restarts
# mid-sequence; cargo runs test binaries one after another, so it shares the machine with no
# other test's server traffic. CHURN_API_RESTARTS=0 runs it on the shared server instead.
#
# With KUBECONFIG set to a real cluster, the local API server is not started and the
# integration tests run against that cluster instead; tests/provider_lookup.rs then needs a
# second, separate cluster in KMAILOPS_SECOND_KUBECONFIG (a cluster rebuilt from Git).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

started_testenv=0
if [ -z "${KUBECONFIG:-}" ]; then
  scripts/k8s-testenv.sh install
  scripts/k8s-testenv.sh start
  started_testenv=1
  export KUBECONFIG="$PWD/target/testenv/kubeconfig"
fi
started_second=0
cleanup() {
  if [ "$started_testenv" = 1 ]; then scripts/k8s-testenv.sh stop || true; fi
  if [ "$started_second" = 1 ]; then
    KMAILOPS_TESTENV_DIR="$PWD/target/testenv2" scripts/k8s-testenv.sh stop || true
  fi
}
trap cleanup EXIT
# A second, separate API server: a cluster rebuilt from Git (tests/provider_lookup.rs).
if [ -z "${KMAILOPS_SECOND_KUBECONFIG:-}" ] && [ "$started_testenv" = 1 ]; then
  started_second=1
  KMAILOPS_TESTENV_DIR="$PWD/target/testenv2" \
    KMAILOPS_TESTENV_API_PORT="${KMAILOPS_SECOND_API_PORT:-26543}" \
    KMAILOPS_TESTENV_ETCD_PORT="${KMAILOPS_SECOND_ETCD_PORT:-23890}" \
    scripts/k8s-testenv.sh start
  export KMAILOPS_SECOND_KUBECONFIG="$PWD/target/testenv2/kubeconfig"
fi

# Integration tests must fail, never skip, when their environment is missing.
export KMAILOPS_REQUIRE_TESTENV=1
cargo test --locked "$@"
