#!/usr/bin/env bash
# Runs the kmailops operator against the cluster in KUBECONFIG: builds it, installs (or
# updates) the CRDs by server-side apply, then starts the controller in the foreground.
#
#   KUBECONFIG=~/.kube/config scripts/run.sh                  # all namespaces
#   KUBECONFIG=~/.kube/config scripts/run.sh --namespace shop # extra args go to `kmailops run`
#
# Without KUBECONFIG it uses the local test API server of scripts/k8s-testenv.sh (started on
# demand), so it works on a machine with no cluster at all.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KUBECONFIG:-}" ]; then
  scripts/k8s-testenv.sh install
  scripts/k8s-testenv.sh start
  export KUBECONFIG="$PWD/target/testenv/kubeconfig"
  echo "KUBECONFIG not set: using the local test API server ($KUBECONFIG)"
fi

cargo build --release --locked
target/release/kmailops crds --apply
exec target/release/kmailops run "$@"
