#!/usr/bin/env bash
# A real Kubernetes API for the integration tests, without Docker.
#
# Runs the real apiextensions-apiserver (the CRD half of kube-apiserver) on a
# real etcd, both built from Debian sid's packages. See
# shared/design/testenv.md for why this shape and what it cannot test.
#
#   scripts/k8s-testenv.sh install   build + cache the two binaries (~8 min cold on 2 cores,
#                                    0 s when cached; delete the cache to rebuild from newer sid)
#   scripts/k8s-testenv.sh start     certs, etcd, apiserver, stand-in CRDs, kubeconfig (~2.5 s);
#                                    a fresh, empty etcd each time unless already running
#   scripts/k8s-testenv.sh stop      stop both processes by pid
#   scripts/k8s-testenv.sh restart-apiserver
#                                    stop the apiserver (SIGTERM) and start it again on the same
#                                    etcd, certs and port, as a control-plane restart: objects and
#                                    resourceVersions survive, every client's connections and
#                                    watches break; returns once it answers again (~2-3 s)
#   scripts/k8s-testenv.sh status    is it running, where is the kubeconfig
#   scripts/k8s-testenv.sh env       prints `export KUBECONFIG=...` (use with eval)
#
# Environment:
#   KMAILOPS_TESTENV_CACHE     binary cache      (default: $HOME/.cache/kmailops-testenv)
#   KMAILOPS_TESTENV_DIR       run dir: kubeconfig, pki/, *.log, *.pid, etcd-data/
#                              (default: <repo>/target/testenv)
#   KMAILOPS_TESTENV_ETCD_PORT etcd client port  (default: 23790; peer port is this + 1)
#   KMAILOPS_TESTENV_API_PORT  apiserver port    (default: 26443)
#   KMAILOPS_TESTENV_DEBIAN_MIRROR  Debian archive URI for sid (default: the one
#                              this machine's own apt sources use)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${KMAILOPS_TESTENV_CACHE:-${HOME:-/root}/.cache/kmailops-testenv}"
RUN_DIR="${KMAILOPS_TESTENV_DIR:-$REPO_ROOT/target/testenv}"
ETCD_PORT="${KMAILOPS_TESTENV_ETCD_PORT:-23790}"
ETCD_PEER_PORT="$((ETCD_PORT + 1))"
API_PORT="${KMAILOPS_TESTENV_API_PORT:-26443}"

APISERVER_BIN="$CACHE_DIR/bin/apiextensions-apiserver"
ETCD_BIN="$CACHE_DIR/bin/etcd"
VERSIONS_FILE="$CACHE_DIR/versions.txt"

# The package whose main.go we build, plus what the build and etcd need.
SEED_PACKAGES=(golang-k8s-apiextensions-apiserver-dev golang-go etcd-server)

log() { printf '[k8s-testenv] %s\n' "$*" >&2; }
die() {
  printf '[k8s-testenv] ERROR: %s\n' "$*" >&2
  exit 1
}

# Runs "$@" up to 3 times with a growing pause; registries do hiccup.
retry() {
  local attempt=1 max=3
  until "$@"; do
    if ((attempt >= max)); then
      log "giving up after $max attempts: $*"
      return 1
    fi
    log "attempt $attempt failed, retrying in $((attempt * 5)) s: $*"
    sleep $((attempt * 5))
    attempt=$((attempt + 1))
  done
}

# shellcheck disable=SC2317 # reached through `retry as_root ...`
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# Installs host tools (from the host's own Debian release) that are missing.
# Arguments are pairs "command:package".
ensure_host_tools() {
  local missing=() pair
  for pair in "$@"; do
    if [[ ${pair%%:*} == /* ]]; then
      [[ -e ${pair%%:*} ]] || missing+=("${pair#*:}")
    else
      command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing tools (${missing[*]}) and no apt-get to install them"
  log "installing host packages: ${missing[*]}"
  retry as_root apt-get update -qq
  retry as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

# The Debian archive URI to reach sid through. Taken from the host's own apt
# sources so that whatever mirror/proxy this machine is set up with is reused.
debian_mirror() {
  if [[ -n ${KMAILOPS_TESTENV_DEBIAN_MIRROR:-} ]]; then
    echo "$KMAILOPS_TESTENV_DEBIAN_MIRROR"
    return
  fi
  local uri
  # deb822 style (bookworm default): "URIs: <uri>" lines; skip the security archive.
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' |
    grep -v -e security -e '^cdrom:' | grep -E '/debian/?$' | head -n1 || true)
  if [[ -z $uri ]]; then
    # one-line style: "deb [opts] <uri> <suite> <components>"
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E -n 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' |
      grep -v security | grep -E '/debian/?$' | head -n1 || true)
  fi
  [[ -n $uri ]] || die "cannot find a Debian archive URI in /etc/apt; set KMAILOPS_TESTENV_DEBIAN_MIRROR"
  echo "${uri%/}"
}

# Writes a private apt configuration under $1 that sees only sid and an empty
# dpkg status, so the host's apt state is neither read nor changed.
write_private_apt_config() {
  local dir=$1 mirror=$2
  mkdir -p "$dir"/{lists/partial,cache/archives/partial,sources.list.d,preferences.d}
  : >"$dir/status"
  cat >"$dir/sources.list.d/sid.sources" <<EOF
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$dir/apt.conf" <<EOF
Dir::State "$dir";
Dir::State::Lists "$dir/lists";
Dir::State::status "$dir/status";
Dir::Cache "$dir/cache";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$dir/sources.list.d";
Dir::Etc::PreferencesParts "$dir/preferences.d";
Dir::Etc::Preferences "/dev/null";
Acquire::Retries "3";
Acquire::Languages "none";
APT::Sandbox::User "root";
Debug::NoLocking "true";
EOF
}

cmd_install() {
  if [[ -x $APISERVER_BIN && -x $ETCD_BIN ]]; then
    log "binaries cached in $CACHE_DIR/bin"
    [[ -f $VERSIONS_FILE ]] && print_versions
    return 0
  fi

  local started=$SECONDS mirror work aptdir root
  mirror=$(debian_mirror)
  # openssl and curl are for `start`; installing them now keeps `start` offline.
  ensure_host_tools apt-get:apt dpkg-deb:dpkg \
    /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring \
    openssl:openssl curl:curl
  # apt speaks https itself (since apt 1.5) but needs the CA bundle to verify it.
  if [[ $mirror == https://* ]]; then
    ensure_host_tools /etc/ssl/certs/ca-certificates.crt:ca-certificates
  fi

  work="$CACHE_DIR/work"
  aptdir="$work/apt"
  root="$work/root"
  rm -rf "$work"
  # The work folder grows to ~3 GB: never leave it behind, not even on failure.
  trap 'rm -rf "$CACHE_DIR/work"' EXIT
  mkdir -p "$work/debs" "$root" "$CACHE_DIR/bin"
  write_private_apt_config "$aptdir" "$mirror"
  export APT_CONFIG="$aptdir/apt.conf"

  log "reading Debian sid package lists from $mirror"
  # --error-on=any: a partly failed update must fail (and be retried), not pass quietly.
  retry apt-get update -qq --error-on=any || die "apt-get update of sid failed (see above)"

  # With an empty dpkg status, a simulated install names the whole dependency
  # closure. Only the Go sources/toolchain and etcd are needed; the rest
  # (libc, adduser, ...) would be installed, not built from.
  local closure
  closure=$(apt-get install -s -qq --no-install-recommends "${SEED_PACKAGES[@]}" 2>&1) ||
    die "cannot resolve ${SEED_PACKAGES[*]} in sid:"$'\n'"$closure"
  local -a pkgs=() versions=()
  local name version
  while read -r name version; do
    case $name in
      golang-* | etcd-server)
        pkgs+=("$name=$version")
        versions+=("$name $version")
        ;;
    esac
  done < <(sed -n -E 's/^Inst ([^ ]+) \(([^ ]+) .*/\1 \2/p' <<<"$closure")
  ((${#pkgs[@]} > 0)) || die "empty package closure; apt said:"$'\n'"$closure"
  log "downloading ${#pkgs[@]} packages from sid"
  (cd "$work/debs" && retry apt-get download -qq "${pkgs[@]}") || die "apt-get download failed"

  log "unpacking into $root"
  local deb
  for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root"
  done
  rm -rf "$work/debs"

  local goroot gopath srcdir
  goroot=$(find "$root/usr/lib" -maxdepth 1 -type d -name 'go-1.*' | sort -V | tail -n1)
  [[ -n $goroot && -x $goroot/bin/go ]] || die "no Go toolchain found under $root/usr/lib"
  gopath="$root/usr/share/gocode"
  srcdir="$gopath/src/k8s.io/apiextensions-apiserver"
  [[ -f $srcdir/main.go ]] || die "no $srcdir/main.go in golang-k8s-apiextensions-apiserver-dev"

  log "building apiextensions-apiserver with $("$goroot/bin/go" version 2>/dev/null || echo "$goroot") (takes minutes)"
  # GOPATH mode: Debian ships the sources in a GOPATH tree, not as modules.
  # CGO off: a static binary and no C compiler needed.
  (
    cd "$srcdir"
    env GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
      GOPATH="$gopath" GOROOT="$goroot" GOCACHE="$work/gocache" GOTMPDIR= \
      "$goroot/bin/go" build -trimpath -ldflags=-s -o "$APISERVER_BIN.tmp" .
  ) || die "go build of apiextensions-apiserver failed"
  [[ -x $root/usr/bin/etcd ]] || die "etcd-server did not ship /usr/bin/etcd"
  cp "$root/usr/bin/etcd" "$ETCD_BIN.tmp"
  mv "$APISERVER_BIN.tmp" "$APISERVER_BIN"
  mv "$ETCD_BIN.tmp" "$ETCD_BIN"

  {
    echo "# packages from Debian sid used to build $CACHE_DIR/bin, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%s\n' "${versions[@]}"
  } >"$VERSIONS_FILE"
  rm -rf "$work"
  log "installed in $((SECONDS - started)) s"
  print_versions
}

print_versions() {
  log "versions (from $VERSIONS_FILE):"
  grep -E '^(golang-k8s-apiextensions-apiserver-dev|golang-[0-9.]+-go|etcd-server) ' "$VERSIONS_FILE" |
    sed 's/^/[k8s-testenv]   /' >&2 || true
}

# ---------------------------------------------------------------------------
# start / stop / status / env
# ---------------------------------------------------------------------------

API_URL="https://127.0.0.1:$API_PORT"
KUBECONFIG_FILE="$RUN_DIR/kubeconfig"

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# curl as the test admin (client cert in system:masters).
api_curl() {
  curl -sS --max-time 10 --cacert "$RUN_DIR/pki/ca.crt" \
    --cert "$RUN_DIR/pki/client.crt" --key "$RUN_DIR/pki/client.key" "$@"
}

# A throwaway CA, a server cert for 127.0.0.1/localhost and a client cert
# whose O=system:masters is authorized without any SubjectAccessReview (there
# is no RBAC here to ask).
make_pki() {
  local pki="$RUN_DIR/pki"
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = kmailops-testenv-ca
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
EOF
    cat >server.ext <<'EOF'
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
EOF
    cat >client.ext <<'EOF'
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 3650 -config ca.cnf -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -new "${ec[@]}" -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    openssl req -new "${ec[@]}" -subj "/O=system:masters/CN=kmailops-test-admin" \
      -keyout client.key -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.crt 2>/dev/null
    rm -f ./*.csr ./*.srl ./*.cnf ./*.ext
  ) || die "openssl failed to make the test certificates"
}

write_kubeconfig() {
  local pki="$RUN_DIR/pki"
  b64() { base64 -w0 <"$1"; }
  # It holds the admin key: readable by the owner only.
  (umask 077 && : >"$KUBECONFIG_FILE.tmp")
  cat >"$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kmailops-testenv
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: kmailops-test-admin
  user:
    client-certificate-data: $(b64 "$pki/client.crt")
    client-key-data: $(b64 "$pki/client.key")
contexts:
- name: kmailops-testenv
  context:
    cluster: kmailops-testenv
    user: kmailops-test-admin
    namespace: default
current-context: kmailops-testenv
EOF
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

# CRDs standing in for built-in types that the apiextensions-apiserver alone
# does not serve. Groups under k8s.io need the api-approved annotation.
# core.testing.k8s.io is where the Rust test harness's shim sends
# /api/v1 secrets and configmaps (the core group itself cannot be a CRD).
standin_crd() {
  local group=$1 kind=$2 plural=$3
  cat <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $plural.$group
  annotations:
    api-approved.kubernetes.io: "unapproved, test-only"
spec:
  group: $group
  scope: Namespaced
  names:
    kind: $kind
    listKind: ${kind}List
    plural: $plural
    singular: ${kind,,}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
EOF
}

STANDINS=(
  "coordination.k8s.io Lease leases"
  "events.k8s.io Event events"
  "core.testing.k8s.io Secret secrets"
  "core.testing.k8s.io ConfigMap configmaps"
)

# Server-side apply with plain curl: works without kubectl, and kubectl's
# discovery would fail anyway (there is no /api here).
apply_standin_crds() {
  local entry group kind plural out
  for entry in "${STANDINS[@]}"; do
    read -r group kind plural <<<"$entry"
    out=$(standin_crd "$group" "$kind" "$plural" | api_curl -X PATCH -w '\n%{http_code}' \
      -H 'Content-Type: application/apply-patch+yaml' --data-binary @- \
      "$API_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$plural.$group?fieldManager=kmailops-testenv&force=true") ||
      die "could not apply CRD $plural.$group: $out"
    [[ ${out##*$'\n'} == 200 || ${out##*$'\n'} == 201 ]] ||
      die "applying CRD $plural.$group failed (HTTP ${out##*$'\n'}): ${out%$'\n'*}"
  done
  wait_standins_served
}

# Established is not yet served (after a create, and after an apiserver start until its CRD
# informer has synced; all CRDs are served from that one moment): wait until every stand-in
# lists.
wait_standins_served() {
  local entry group kind plural deadline=$((SECONDS + 30))
  for entry in "${STANDINS[@]}"; do
    read -r group kind plural <<<"$entry"
    until api_curl -f -o /dev/null "$API_URL/apis/$group/v1/$plural" 2>/dev/null; do
      ((SECONDS < deadline)) || die "stand-in CRD $plural.$group is not served after 30 s"
      sleep 0.2
    done
  done
}

show_log_tails() {
  local f
  for f in "$RUN_DIR/etcd.log" "$RUN_DIR/apiserver.log"; do
    [[ -f $f ]] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

start_failed() {
  show_log_tails
  cmd_stop >/dev/null 2>&1 || true
  die "$*"
}

# Starts the apiserver on the running etcd and waits until it answers; $1 is called with a
# message if it does not (default: start_failed, which stops everything).
start_apiserver() {
  local on_failure=${1:-start_failed}
  # There is no core kube-apiserver: the authn/authz/core kubeconfigs all point
  # at this server itself, and every admission plugin that would look up
  # Namespaces or webhooks is off (so tests need no Namespace objects).
  setsid "$APISERVER_BIN" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$API_PORT" \
    --cert-dir "$RUN_DIR/apiserver-certs" \
    --tls-cert-file "$RUN_DIR/pki/server.crt" --tls-private-key-file "$RUN_DIR/pki/server.key" \
    --client-ca-file "$RUN_DIR/pki/ca.crt" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --authentication-skip-lookup \
    --enable-priority-and-fairness=false \
    --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
    </dev/null >"$RUN_DIR/apiserver.log" 2>&1 &
  echo $! >"$RUN_DIR/apiserver.pid"

  # /readyz never turns green without a core apiserver: ask for what tests use.
  local deadline=$((SECONDS + 60))
  until api_curl -f -o /dev/null "$API_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions" 2>/dev/null; do
    pid_alive "$RUN_DIR/apiserver.pid" || "$on_failure" "apiextensions-apiserver exited during start"
    ((SECONDS < deadline)) || "$on_failure" "apiextensions-apiserver not answering after 60 s"
    sleep 0.2
  done
}

cmd_start() {
  [[ -x $APISERVER_BIN && -x $ETCD_BIN ]] ||
    die "binaries missing in $CACHE_DIR/bin: run '$0 install' first"
  if pid_alive "$RUN_DIR/apiserver.pid" && pid_alive "$RUN_DIR/etcd.pid"; then
    log "already running at $API_URL (kubeconfig $KUBECONFIG_FILE)"
    return 0
  fi
  cmd_stop >/dev/null 2>&1 || true
  local port
  for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT"; do
    port_in_use "$port" &&
      die "port $port on 127.0.0.1 is taken; set KMAILOPS_TESTENV_ETCD_PORT / KMAILOPS_TESTENV_API_PORT"
  done
  ensure_host_tools openssl:openssl curl:curl

  local started=$SECONDS
  mkdir -p "$RUN_DIR"
  # Every start is a clean slate: tests must not see a previous run's objects.
  rm -rf "$RUN_DIR/etcd-data" "$RUN_DIR/apiserver-certs" "$RUN_DIR"/*.log
  make_pki
  write_kubeconfig

  # setsid: a Ctrl-C in the calling terminal must not take the servers down
  # half-way through a test run; `stop` ends them by pid.
  setsid "$ETCD_BIN" --name kmailops-testenv --data-dir "$RUN_DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kmailops-testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls '' --unsafe-no-fsync \
    </dev/null >"$RUN_DIR/etcd.log" 2>&1 &
  echo $! >"$RUN_DIR/etcd.pid"

  local deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$ETCD_PORT/health"; do
    pid_alive "$RUN_DIR/etcd.pid" || start_failed "etcd exited during start"
    ((SECONDS < deadline)) || start_failed "etcd not healthy after 30 s"
    sleep 0.2
  done

  start_apiserver
  apply_standin_crds
  log "running at $API_URL in $((SECONDS - started)) s; logs and pids in $RUN_DIR"
  log "kubeconfig: $KUBECONFIG_FILE  (eval \"\$($0 env)\")"
}

stop_pid_file() {
  local file=$1 what=$2 pid i
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # Not our child (start has exited), so `wait` cannot be used: poll.
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$what (pid $pid) ignored SIGTERM for 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $what (pid $pid)"
  fi
  rm -f "$file"
}

cmd_stop() {
  # The apiserver first, so it does not log a storm of etcd errors.
  stop_pid_file "$RUN_DIR/apiserver.pid" apiextensions-apiserver
  stop_pid_file "$RUN_DIR/etcd.pid" etcd
}

cmd_restart_apiserver() {
  pid_alive "$RUN_DIR/etcd.pid" || die "etcd is not running in $RUN_DIR: use '$0 start'"
  pid_alive "$RUN_DIR/apiserver.pid" || log "the apiserver was not running; starting it"
  local started=$SECONDS
  stop_pid_file "$RUN_DIR/apiserver.pid" apiextensions-apiserver
  # Its port must be free again before the new process binds it.
  local deadline=$((SECONDS + 10))
  while port_in_use "$API_PORT"; do
    ((SECONDS < deadline)) || die "port $API_PORT still taken 10 s after the apiserver stopped"
    sleep 0.1
  done
  mv -f "$RUN_DIR/apiserver.log" "$RUN_DIR/apiserver.log.1" 2>/dev/null || true
  start_apiserver die
  wait_standins_served
  log "apiserver restarted at $API_URL in $((SECONDS - started)) s (etcd kept)"
}

cmd_status() {
  local rc=0 what
  for what in etcd apiserver; do
    if pid_alive "$RUN_DIR/$what.pid"; then
      echo "$what: running (pid $(cat "$RUN_DIR/$what.pid"))"
    else
      echo "$what: stopped"
      rc=1
    fi
  done
  if ((rc == 0)) && api_curl -f -o /dev/null "$API_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions" 2>/dev/null; then
    echo "api: answering at $API_URL"
  else
    echo "api: not answering at $API_URL"
    rc=1
  fi
  echo "kubeconfig: $KUBECONFIG_FILE"
  [[ -f $VERSIONS_FILE ]] && print_versions
  return $rc
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
}

main() {
  local cmd=${1:-}
  case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart-apiserver) cmd_restart_apiserver ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
      echo "usage: $0 install|start|stop|restart-apiserver|status|env" >&2
      exit 2
      ;;
  esac
}

# One line: bash reads scripts as it runs them, so an edit made meanwhile is never executed.
main "$@"; exit
