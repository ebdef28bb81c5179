#!/usr/bin/env bash
# Container images for the real node (tools/real-node.sh), built without a daemon and without a
# registry: buildah builds into its own storage under $IMAGE_DIR, each image is exported as an
# archive, and `load` imports the archives into the node's own containerd.
#
# Usage: tools/image.sh COMMAND
#   build [operator|node]...  build the images (default: both); unchanged inputs reuse the last build
#   load [NAME]               import every built archive into the real node of cluster NAME
#   clean                     delete buildah's storage and the archives
#
# Images:
#   localhost/kube-changejob:dev   ("operator") the project's Dockerfile, as `docker build` would
#                                  build it, on a local Debian base instead of the registry's
#                                  python image (build ARG PYTHON_IMAGE): localhost/changejob/debian-
#                                  python, made by debootstrap from the host's Debian mirror. The
#                                  Python dependencies come from a wheel directory the host's pip
#                                  fills (build ARGs PIP_NO_INDEX, PIP_FIND_LINKS): the build itself
#                                  is offline.
#   busybox:latest                 ("node") the user guide's Job image: Debian's busybox-static
#   localhost/changejob/pause:1    ("node") the pod sandbox image: tools/go/pause
#
# Environment: IMAGE_DIR (default <repo>/build/image), DEBIAN_MIRROR and DEBIAN_SUITE (default: the
# host's first Debian source and its release), TOOLS_DIR, CLUSTER_DIR (for `load`).
# Needs root (buildah's storage, debootstrap, chroot) and tools/host-packages.sh image.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$repo/.tools}
IMAGE_DIR=${IMAGE_DIR:-$repo/build/image}
ARCHIVES=$IMAGE_DIR/archives

OPERATOR_REF=localhost/kube-changejob:dev
# Built under a local name, exported under the name pod specs use (the user guide's busybox:latest).
BUSYBOX_REF=localhost/changejob/busybox:latest
BUSYBOX_NAME=busybox:latest
PAUSE_REF=localhost/changejob/pause:1
BASE_REPO=localhost/changejob/debian-python
# What the local base image holds beyond debootstrap's minbase: the interpreter and venv (ensurepip).
BASE_PACKAGES=python3,python3-venv
# Bumped when the way the base is made changes, so an older base is made again.
BASE_RECIPE=1

log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_s() { date +%s; }

# buildah with storage (overlay: layers cost no copies), run directory, CNI directory, short-name cache and temporary files of our
# own: nothing under /var/lib/containers, /run/containers, /etc/cni, /var/cache or /var/tmp, except
# the blob-info cache buildah always keeps in /var/lib/containers/cache when run by root, which is
# removed after the build when it was not there before (see keep_host_clean).
storage_env() {
  mkdir -p "$IMAGE_DIR/storage" "$IMAGE_DIR/run" "$IMAGE_DIR/tmp" "$IMAGE_DIR/cni" "$ARCHIVES"
  cat >"$IMAGE_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$IMAGE_DIR/storage"
runroot = "$IMAGE_DIR/run"
EOF
  export CONTAINERS_STORAGE_CONF=$IMAGE_DIR/storage.conf TMPDIR=$IMAGE_DIR/tmp
  export BUILDAH_ISOLATION=chroot
}
bah() {
  buildah --storage-driver overlay --root "$IMAGE_DIR/storage" --runroot "$IMAGE_DIR/run" \
    --short-name-alias-conf "$IMAGE_DIR/short-name-aliases.conf" "$@"
}
bah_from() { bah from --cni-config-dir "$IMAGE_DIR/cni" "$@"; }

keep_host_clean() {
  if [[ ! -e /var/lib/containers ]]; then
    trap 'rm -rf /var/lib/containers' EXIT
  fi
}

preflight() {
  [[ $(uname -s) == Linux ]] || die "images are built on Linux only"
  [[ $(id -u) -eq 0 ]] || die "building images needs root (buildah's storage, debootstrap)"
  "$here/host-packages.sh" image
  storage_env
  keep_host_clean
}

# What each image was last built from ($IMAGE_DIR/stamps/NAME): a build whose inputs hash the same
# is reused. (Stamp files, not image labels: `buildah inspect` touches /etc/cni.)
stamp_of() { cat "$IMAGE_DIR/stamps/$1" 2>/dev/null || true; }
set_stamp() { mkdir -p "$IMAGE_DIR/stamps"; echo "$2" >"$IMAGE_DIR/stamps/$1"; }
image_exists() { [[ -n $(bah images --quiet "$1" 2>/dev/null) ]]; }
current() {  # current NAME REF KEY [ARCHIVE]: the image REF exists, was built from KEY (and exported)
  [[ $(stamp_of "$1") == "$3" ]] && image_exists "$2" && [[ -z ${4:-} || -f $4 ]]
}

# The host's Debian mirror and release, unless DEBIAN_MIRROR / DEBIAN_SUITE say otherwise.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2; exit}')
  [[ -n $uri ]] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '$2 !~ /security/ {print $2; exit}')
  [[ -n $uri ]] || die "no Debian mirror in /etc/apt; set DEBIAN_MIRROR"
  echo "$uri"
}
debian_suite() {
  if [[ -n ${DEBIAN_SUITE:-} ]]; then echo "$DEBIAN_SUITE"; return; fi
  local suite
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n $suite ]] || die "cannot tell the host's Debian release; set DEBIAN_SUITE"
  echo "$suite"
}

# --- the local base image --------------------------------------------------------------------------

# A Debian root file system with Python, as a base image in buildah's storage. Made once per suite,
# package list and recipe; the label dev.changejob.base-key tells a current base from an old one.
base_image() {
  local suite mirror key ref ctr mnt
  suite=$(debian_suite)
  mirror=$(debian_mirror)
  ref=$BASE_REPO:$suite
  key=$(printf '%s\n' "$suite" "$BASE_PACKAGES" "$BASE_RECIPE" | sha256sum | cut -c1-16)
  if current base "$ref" "$key" && [[ -f $IMAGE_DIR/stamps/base.env ]]; then
    log "base $ref: cached"
    echo "$ref"
    return
  fi
  log "base $ref: debootstrap $suite from $mirror (log: $IMAGE_DIR/debootstrap.log)"
  local start
  start=$(now_s)
  ctr=$(bah_from --name changejob-base-work scratch 2>/dev/null ||
    { bah rm changejob-base-work >/dev/null 2>&1; bah_from --name changejob-base-work scratch; })
  mnt=$(bah mount "$ctr")
  # debootstrap mounts /proc and /sys inside the target while it works; they are released on any exit.
  trap 'umount_under "$mnt"' EXIT
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$suite" "$mnt" "$mirror" \
      >"$IMAGE_DIR/debootstrap.log" 2>&1; then
    umount_under "$mnt"; bah rm "$ctr" >/dev/null
    tail -n 20 "$IMAGE_DIR/debootstrap.log" >&2
    die "debootstrap failed (log: $IMAGE_DIR/debootstrap.log)"
  fi
  umount_under "$mnt"
  trap - EXIT
  rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/* "$mnt"/tmp/*
  local python glibc
  python=$(readlink "$mnt/usr/bin/python3"); python=${python#python}
  glibc=$(awk '/^Package: libc6$/ {p=1} p && /^Version:/ {print $2; exit}' "$mnt/var/lib/dpkg/status")
  glibc=${glibc%%-*}
  [[ $python =~ ^3\.[0-9]+$ && $glibc =~ ^2\.[0-9]+$ ]] || die "unexpected base: python '$python', glibc '$glibc'"
  bah umount "$ctr" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="Debian $suite with Python $python (debootstrap)" \
    "$ctr"
  bah commit --quiet --rm "$ctr" "$ref" >/dev/null
  printf 'BASE_PYTHON=%s\nBASE_GLIBC=%s\n' "$python" "$glibc" >"$IMAGE_DIR/stamps/base.env.tmp"
  mv "$IMAGE_DIR/stamps/base.env.tmp" "$IMAGE_DIR/stamps/base.env"
  set_stamp base "$key"
  log "base $ref: Python $python, glibc $glibc, made in $(( $(now_s) - start ))s"
  echo "$ref"
}

umount_under() {  # umount_under DIR: unmount everything mounted below DIR, innermost first
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r)
}

# --- the operator image ----------------------------------------------------------------------------

host_python() {
  if [[ -x $repo/.venv/bin/python ]]; then echo "$repo/.venv/bin/python"; else command -v python3; fi
}

# Every wheel the project needs (the locked, hashed dependencies of requirements.lock, and setuptools
# and wheel to build the project itself), for the base's Python and glibc, downloaded by the host's
# pip (the host's index and certificates), so the image build itself needs no network.
wheelhouse() {  # wheelhouse DIR
  local dir=$1 python glibc arch py platforms=() g build_reqs=()
  python=$(. "$IMAGE_DIR/stamps/base.env" && echo "$BASE_PYTHON")
  glibc=$(. "$IMAGE_DIR/stamps/base.env" && echo "$BASE_GLIBC")
  arch=$(uname -m)
  py=$(host_python)
  for ((g = ${glibc#2.}; g >= 17; g--)); do platforms+=(--platform "manylinux_2_${g}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch" --platform "linux_$arch")
  mapfile -t build_reqs < <("$py" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
print(*project["build-system"]["requires"], sep="\n")
PY
)
  rm -rf "$dir"
  mkdir -p "$dir"
  log "wheels for Python $python (glibc $glibc, $arch) into $dir"
  local target=(--only-binary=:all: --implementation cp --python-version "$python" --abi "cp3${python#3.}"
    "${platforms[@]}")
  "$py" -m pip download --quiet --disable-pip-version-check --dest "$dir" "${target[@]}" \
    --require-hashes -r "$repo/requirements.lock" >&2
  "$py" -m pip download --quiet --disable-pip-version-check --dest "$dir" "${target[@]}" "${build_reqs[@]}" >&2
}

# What the operator image is built from: the Dockerfile, the files the context admits, the base.
operator_inputs_key() {  # operator_inputs_key BASE_REF
  {
    echo "$1 $(bah images --noheading --no-trunc --format '{{.ID}}' "$1")"
    cat "$repo/Dockerfile" "$repo/.dockerignore"
    cd "$repo"
    local paths=() p
    for p in pyproject.toml README.md LICENSE requirements.lock operator; do [[ -e $p ]] && paths+=("$p"); done
    find "${paths[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' |
      LC_ALL=C sort | xargs -r sha256sum
  } | sha256sum | cut -c1-16
}

build_operator() {
  local base key start
  base=$(base_image)
  key=$(operator_inputs_key "$base")
  if current operator "$OPERATOR_REF" "$key" "$ARCHIVES/operator.tar"; then
    log "$OPERATOR_REF: cached"
    return
  fi
  start=$(now_s)
  wheelhouse "$IMAGE_DIR/wheels"
  log "$OPERATOR_REF: buildah bud Dockerfile (PYTHON_IMAGE=$base; log: $IMAGE_DIR/build.log)"
  if ! bah bud --cni-config-dir "$IMAGE_DIR/cni" --isolation chroot --pull=never --format docker \
      --build-arg PYTHON_IMAGE="$base" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse \
      --volume "$IMAGE_DIR/wheels:/wheelhouse:ro" \
      --tag "$OPERATOR_REF" --file "$repo/Dockerfile" "$repo" >"$IMAGE_DIR/build.log" 2>&1; then
    tail -n 30 "$IMAGE_DIR/build.log" >&2
    die "buildah bud failed (log: $IMAGE_DIR/build.log)"
  fi
  export_archive "$OPERATOR_REF" "$OPERATOR_REF" operator
  set_stamp operator "$key"
  # Layers of earlier builds are no longer reachable from any tag; drop them.
  bah rmi --prune >/dev/null 2>&1 || true
  log "$OPERATOR_REF: built in $(( $(now_s) - start ))s"
}

# --- the node images -------------------------------------------------------------------------------

# scratch + files: busybox-static with one link per applet, or the pause binary.
build_node_images() {
  "$here/build.sh" pause >/dev/null
  local pause=$TOOLS_DIR/bin/pause busybox=/bin/busybox key ctr mnt applet
  [[ -x $pause ]] || die "missing $pause (tools/build.sh pause)"
  key=$(sha256sum "$pause" | cut -c1-16)
  if current pause "$PAUSE_REF" "$key" "$ARCHIVES/pause.tar"; then
    log "$PAUSE_REF: cached"
  else
    ctr=$(bah_from scratch)
    bah copy --chmod 0755 "$ctr" "$pause" /pause >/dev/null
    bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    bah commit --quiet --rm --format docker "$ctr" "$PAUSE_REF" >/dev/null
    export_archive "$PAUSE_REF" "$PAUSE_REF" pause
    set_stamp pause "$key"
    log "$PAUSE_REF: built"
  fi
  key=$( { sha256sum "$busybox"; echo 1; } | sha256sum | cut -c1-16)
  if current busybox "$BUSYBOX_REF" "$key" "$ARCHIVES/busybox.tar"; then
    log "$BUSYBOX_REF: cached"
    return
  fi
  [[ -x $busybox ]] && "$busybox" --list >/dev/null || die "$busybox is not busybox-static"
  ctr=$(bah_from scratch)
  mnt=$(bah mount "$ctr")
  mkdir -p "$mnt"/{bin,etc,tmp,root,proc,sys,dev}
  chmod 1777 "$mnt/tmp"
  install -m 0755 "$busybox" "$mnt/bin/busybox"
  while read -r applet; do
    [[ $applet == busybox || -e $mnt/bin/$applet ]] || ln -s busybox "$mnt/bin/$applet"
  done < <("$busybox" --list)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$mnt/etc/group"
  bah umount "$ctr" >/dev/null
  bah config --cmd sh --env PATH=/bin \
    --label org.opencontainers.image.description="Debian's busybox-static" "$ctr"
  bah commit --quiet --rm --format docker "$ctr" "$BUSYBOX_REF" >/dev/null
  export_archive "$BUSYBOX_REF" "$BUSYBOX_NAME" busybox
  set_stamp busybox "$key"
  log "$BUSYBOX_REF: built"
}

# A docker-archive for `ctr images import`, named as the image is named in pod specs.
export_archive() {  # export_archive REF NAME FILE_STEM
  local out=$ARCHIVES/$3.tar
  rm -f "$out.tmp"
  bah push --quiet "$1" "docker-archive:$out.tmp:$2" >/dev/null
  mv "$out.tmp" "$out"
}

cmd_build() {
  local what=("$@") w
  [[ ${#what[@]} -gt 0 ]] || what=(node operator)
  preflight
  for w in "${what[@]}"; do
    case $w in
      node) build_node_images ;;
      operator) build_operator ;;
      *) die "unknown image set: $w (node, operator)" ;;
    esac
  done
}

cmd_load() {
  local name=${1:-${CHANGEJOB_CLUSTER_NAME:-changejob-test}} sock f
  sock=$("$here/real-node.sh" socket "$name") || die "no real node runs in cluster $name (tools/cluster.sh node-up $name)"
  for f in "$ARCHIVES"/*.tar; do
    [[ -f $f ]] || continue
    ctr --address "$sock" --namespace k8s.io images import --no-unpack=false "$f" >/dev/null ||
      die "ctr images import $f failed"
    log "loaded $(basename "$f" .tar) into the node of cluster $name"
  done
}

cmd_clean() {
  storage_env
  umount_under "$IMAGE_DIR"
  bah rm --all >/dev/null 2>&1 || true
  rm -rf "$IMAGE_DIR"
  log "removed $IMAGE_DIR"
}

main() {
  local cmd=${1:-help}
  shift || true
  case $cmd in
    build) cmd_build "$@" ;;
    load) cmd_load "$@" ;;
    clean) cmd_clean ;;
    help|-h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (try: tools/image.sh help)" ;;
  esac
}

main "$@"
