#!/usr/bin/env bash
# Runs the kmailops operator against the cluster in KUBECONFIG: builds it, installs (or
# updates) the CRDs by server-side apply, then starts the controller in the foreground.
#
#   KUBECONFIG=~/.kube/config scripts/run.sh                  # all namespaces
#   KUBECONFIG=~/.kube/config scripts/run.sh --namespace shop # extra args go to `kmailops run`
#
# On a machine without a cluster, scripts/demo.sh runs everything locally instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
  echo "scripts/run.sh: no cluster: set KUBECONFIG (or create ~/.kube/config)." >&2
  echo "To try kmailops without a cluster, run scripts/demo.sh." >&2
  exit 2
fi

# Outside the cluster there is no POD_NAMESPACE; keep the leader Lease in a namespace that
# always exists unless told otherwise.
export KMAILOPS_LEADER_ELECTION_NAMESPACE="${KMAILOPS_LEADER_ELECTION_NAMESPACE:-default}"

cargo build --release --locked
target/release/kmailops crds --apply
exec target/release/kmailops run "$@"
