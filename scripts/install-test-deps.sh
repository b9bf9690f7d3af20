#!/usr/bin/env bash
# Installs the system packages the test suite needs, once; a no-op when they are present.
#  - python3-aiosmtpd: a real SMTP server (STARTTLS, implicit TLS, AUTH) for the SMTP tests.
#  - openssl: certificates for the local API server.
set -euo pipefail
cd "$(dirname "$0")/.."

# kubectl renders deploy/ with kustomize in the deploy-manifest tests.
scripts/install-kubectl.sh

need=()
python3 -c 'import aiosmtpd' 2>/dev/null || need+=(aiosmtpd)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0

if [[ " ${need[*]} " == *" openssl "* ]]; then
  apt-get update -qq && apt-get install -y -qq openssl
fi
if [[ " ${need[*]} " == *" aiosmtpd "* ]]; then
  # The python3 on PATH may not be Debian's, so install into the interpreter the tests run.
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
