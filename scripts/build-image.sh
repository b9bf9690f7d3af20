#!/usr/bin/env bash
# Builds the kmailops operator image from this repository's Dockerfile and pushes it to your
# registry. No image is published for you: deploy/, flux/ and argocd/ run the image you build
# here (see docs/operations.md#install).
#
#   scripts/build-image.sh registry.example.com/team/kmailops:0.1.0            # build and push
#   scripts/build-image.sh --no-push kmailops:dev                               # build only
#   scripts/build-image.sh --platform linux/arm64 registry.example.com/team/kmailops:0.1.0
#   KMAILOPS_IMAGE=registry.example.com/team/kmailops:0.1.0 scripts/build-image.sh
#
# Options:
#   --push / --no-push   push after the build (default: push)
#   --platform P         passed to `build --platform`, e.g. linux/amd64 or linux/arm64
#   --also-tag TAG       also tag the image as NAME:TAG (and push that too); repeatable
#   -h, --help           this text
#
# Environment:
#   KMAILOPS_IMAGE              the image reference, when not given as the argument
#   KMAILOPS_CONTAINER_ENGINE   `docker`, `podman` or a path to either; default: docker if it
#                               is on PATH, else podman
#   KMAILOPS_PLATFORM           as --platform
#
# The reference must carry an explicit tag (`:0.1.0`), and to push it must start with a
# registry host (`registry.example.com/`, `localhost:5000/`), so that an image is never pushed
# to Docker Hub by accident. Log in to the registry first (`docker login HOST`).
#
# The script uses shell built-ins only, besides the container engine itself.
set -euo pipefail

usage() {
  local line
  while IFS= read -r line; do
    case "$line" in
      '#!'*) ;;
      '#'*) line="${line#\#}"; printf '%s\n' "${line# }" ;;
      *) break ;;
    esac
  done <"${BASH_SOURCE[0]}"
}

fail() {
  printf 'scripts/build-image.sh: %s\n' "$1" >&2
  exit 2
}

script_dir="${BASH_SOURCE[0]%/*}"
[ "$script_dir" = "${BASH_SOURCE[0]}" ] && script_dir=.
repo="$(cd "$script_dir/.." && pwd)"

push=true
platform="${KMAILOPS_PLATFORM:-}"
image="${KMAILOPS_IMAGE:-}"
image_arg=""
also_tags=()

while [ $# -gt 0 ]; do
  case "$1" in
    --push) push=true ;;
    --no-push) push=false ;;
    --platform)
      [ $# -ge 2 ] && [ -n "$2" ] || fail "--platform needs a value, e.g. --platform linux/amd64"
      platform="$2"
      shift
      ;;
    --platform=*) platform="${1#--platform=}" ;;
    --also-tag)
      [ $# -ge 2 ] && [ -n "$2" ] || fail "--also-tag needs a tag, e.g. --also-tag 0.1"
      also_tags+=("$2")
      shift
      ;;
    --also-tag=*) also_tags+=("${1#--also-tag=}") ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *)
      [ -z "$image_arg" ] || fail "one image reference only; got '$image_arg' and '$1'"
      image_arg="$1"
      ;;
  esac
  shift
done
[ -n "$image_arg" ] && image="$image_arg"

if [ -z "$image" ]; then
  fail "no image reference: give one, e.g. scripts/build-image.sh registry.example.com/team/kmailops:0.1.0 (or set KMAILOPS_IMAGE)"
fi

# ---- the image reference ---------------------------------------------------------------
# The grammar of the distribution reference: [HOST[:PORT]/]PATH:TAG, where PATH is lower-case
# components separated by '/'. A digest (@sha256:...) names an image that already exists, so
# it can not be the target of a build.
bad_reference() {
  fail "'$image' is not a usable image reference: $1 (expected e.g. registry.example.com/team/kmailops:0.1.0)"
}
case "$image" in
  *@*) bad_reference "a digest names an existing image; give a tag to build" ;;
  *[[:space:]]*) bad_reference "it contains white space" ;;
esac
last="${image##*/}"
case "$last" in
  *:*) ;;
  *) bad_reference "no tag; give an explicit one such as :0.1.0" ;;
esac
tag="${last##*:}"
name="${image%:"$tag"}"
tag_re='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
[[ "$tag" =~ $tag_re ]] || bad_reference "the tag '$tag' is not valid (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
[ ${#name} -le 255 ] || bad_reference "the name is longer than 255 characters"

host=""
path="$name"
first="${name%%/*}"
if [ "$first" != "$name" ]; then
  case "$first" in
    *.* | *:* | localhost)
      host="$first"
      path="${name#*/}"
      ;;
  esac
fi
if [ -n "$host" ]; then
  host_re='^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?$'
  [[ "$host" =~ $host_re ]] || bad_reference "the registry host '$host' is not valid"
fi
component_re='^[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*$'
rest="$path/"
while [ -n "$rest" ]; do
  component="${rest%%/*}"
  rest="${rest#*/}"
  [ -n "$component" ] || bad_reference "it has an empty path component"
  [[ "$component" =~ $component_re ]] || bad_reference "the path component '$component' is not valid (lower-case letters, digits, and '.', '_', '-' between them)"
done

for extra in ${also_tags[@]+"${also_tags[@]}"}; do
  [[ "$extra" =~ $tag_re ]] || fail "--also-tag '$extra' is not a valid tag"
done

if $push && [ -z "$host" ]; then
  fail "'$image' names no registry host, so a push would go to Docker Hub. Prefix it with your registry (e.g. registry.example.com/$name:$tag), or build only with --no-push"
fi

# ---- the container engine ----------------------------------------------------------------
engine="${KMAILOPS_CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    fail "neither docker nor podman is on PATH (or set KMAILOPS_CONTAINER_ENGINE)"
  fi
elif ! command -v "$engine" >/dev/null 2>&1; then
  fail "KMAILOPS_CONTAINER_ENGINE=$engine: no such command"
fi
# The Dockerfile uses RUN --mount (cargo caches), which needs BuildKit with docker; podman
# (buildah) understands it natively.
case "${engine##*/}" in
  docker*) export DOCKER_BUILDKIT=1 ;;
esac

run() {
  printf '+ %s\n' "$*" >&2
  "$@"
}

# ---- build, tag, push ----------------------------------------------------------------------
build=("$engine" build --file "$repo/Dockerfile" --tag "$image")
[ -n "$platform" ] && build+=(--platform "$platform")
build+=("$repo")
run "${build[@]}"

pushed=("$image")
for extra in ${also_tags[@]+"${also_tags[@]}"}; do
  run "$engine" tag "$image" "$name:$extra"
  pushed+=("$name:$extra")
done

if $push; then
  for ref in "${pushed[@]}"; do
    run "$engine" push "$ref"
  done
fi

# ---- what to do next -------------------------------------------------------------------------
# The name deploy/deployment.yaml runs; kustomize's images: override replaces it.
base_name=""
while IFS= read -r line; do
  case "$line" in
    *image:*)
      base_name="${line#*image:}"
      base_name="${base_name#"${base_name%%[![:space:]]*}"}"
      base_name="${base_name%%[[:space:]]*}"
      base_name="${base_name%:*}"
      break
      ;;
  esac
done <"$repo/deploy/deployment.yaml"
[ -n "$base_name" ] || base_name=ghcr.io/kmailops/kmailops

echo
if $push; then
  echo "Built and pushed ${pushed[*]}."
else
  echo "Built ${pushed[*]}; not pushed."
  if [ -n "$host" ]; then
    echo "A cluster can pull it once it is pushed: $engine push $image"
  else
    echo "A cluster can pull it only from a registry: rebuild it under your registry's host, or load it into a local cluster (e.g. kind load docker-image $image)."
  fi
fi
printf '%s\n' \
  "" \
  "Point deploy/ (or your overlay of it) at this image:" \
  "" \
  "  (cd deploy && kustomize edit set image $base_name=$image)" \
  "" \
  "or write the override into the kustomization.yaml yourself:" \
  "" \
  "  images:" \
  "    - name: $base_name" \
  "      newName: $name" \
  "      newTag: \"$tag\"" \
  "" \
  "then install with: kubectl apply -k deploy/    (docs/operations.md#install)"
