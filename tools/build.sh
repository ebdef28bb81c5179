#!/usr/bin/env bash
# Build every pinned external binary from its Go module (see tools/pins.env).
#
# Each tool is built into $TOOLS_DIR/<tool>-<key>/ where <key> is derived from its pin and the
# content of its build module, so a tool is rebuilt only when its pin changes. $TOOLS_DIR/bin holds
# symlinks to the current builds. Usage: tools/build.sh [tool ...]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=pins.env
source "$here/pins.env"
TOOLS_DIR=${TOOLS_DIR:-$repo/.tools}
mkdir -p "$TOOLS_DIR/bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [[ "${GO_TOOLCHAIN:-local}" != local ]]; then export GOTOOLCHAIN=$GO_TOOLCHAIN; fi

log() { printf '[tools %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Runs "$@" while printing a heartbeat, so a long cold build visibly makes progress.
with_heartbeat() {
  local what=$1; shift
  local start=$SECONDS
  ( while sleep 30; do log "  … still building $what ($((SECONDS - start))s)"; done ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  [[ $rc -eq 0 ]] || { log "FAILED: $what (exit $rc)"; return "$rc"; }
  log "  built $what in $((SECONDS - start))s"
}

key_of() {  # key_of VERSION [MODULE_DIR]
  local extra=""
  [[ -n "${2:-}" ]] && extra=$(cat "$2"/go.mod "$2"/*.go 2>/dev/null | sha256sum | cut -c1-10)
  echo "$1${extra:+-$extra}"
}

# install_tool NAME KEY BUILD_FUNCTION BINARIES...
install_tool() {
  local name=$1 key=$2 fn=$3; shift 3
  local dest="$TOOLS_DIR/$name-$key"
  if [[ -f "$dest/.complete" ]]; then
    log "$name $key: cached"
  else
    log "$name $key: building"
    rm -rf "$dest.partial"; mkdir -p "$dest.partial"
    with_heartbeat "$name" "$fn" "$dest.partial"
    touch "$dest.partial/.complete"
    rm -rf "$dest"; mv "$dest.partial" "$dest"
  fi
  local b
  for b in "$@"; do ln -sfn "$dest/$b" "$TOOLS_DIR/bin/$b"; done
}

# The version stamps kubectl, kube-apiserver and the kubelet report, as the upstream release sets them.
kube_ldflags() {
  local v=$KUBERNETES_VERSION minor pkg ld="-s -w"
  minor=${v#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

build_kubernetes() {
  local out=$1
  cd "$here/go/kubernetes"
  go build -trimpath -tags selinux,notest -ldflags "$(kube_ldflags)" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

# The kubelet of the real node (tools/cluster.sh node-up), from the same pinned k8s.io/kubernetes as
# the control plane. Its own build module keeps the control plane's key (and build) unchanged: the
# kubelet needs a few modules the control plane does not (tools/go/kubelet/go.mod).
build_kubelet() {
  cd "$here/go/kubelet"
  go build -trimpath -tags selinux,notest -ldflags "$(kube_ldflags)" -o "$1/" k8s.io/kubernetes/cmd/kubelet
}

# The pod sandbox ("pause") program of the real node's images (tools/image.sh); our own, 40 lines.
build_pause() {
  cd "$here/go/pause"
  go build -trimpath -ldflags "-s -w" -o "$1/pause" .
}

build_etcd() {
  cd "$here/go/etcd"
  go build -trimpath -ldflags "-s -w" -o "$1/etcd" .
}

build_kwok() {
  GOBIN=$1 go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

build_helm() {
  local major=${HELM_VERSION%%.*}
  GOBIN=$1 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
}

build_jaeger() {
  cd "$here/go/jaeger"
  go build -trimpath -ldflags "-s -w" -o "$1/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
}

build_health() {
  cd "$here/go/health"
  go build -trimpath -ldflags "-s -w" -o "$1/gitops-health" .
}

build_actionlint() {
  GOBIN=$1 go install -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}

build_registry() {
  cd "$here/go/registry"
  go build -trimpath \
    -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" \
    -o "$1/registry" github.com/distribution/distribution/v3/cmd/registry
}

build_promtool() {
  local rest=${PROMETHEUS_VERSION#v0.}  # module v0.316.0 is Prometheus 3.16.0
  local release="3.$((${rest%%.*} - 300)).${rest#*.}"
  cd "$here/go/prometheus"
  go build -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    -o "$1/promtool" github.com/prometheus/prometheus/cmd/promtool
}

one() {
  case $1 in
    kubernetes) install_tool kubernetes "$(key_of "$KUBERNETES_VERSION" "$here/go/kubernetes")" build_kubernetes \
                  kube-apiserver kube-controller-manager kube-scheduler kubectl ;;
    kubelet)    install_tool kubelet "$(key_of "$KUBERNETES_VERSION" "$here/go/kubelet")" build_kubelet kubelet ;;
    pause)      install_tool pause "$(key_of local "$here/go/pause")" build_pause pause ;;
    etcd)       install_tool etcd "$(key_of "$ETCD_VERSION" "$here/go/etcd")" build_etcd etcd ;;
    kwok)       install_tool kwok "$KWOK_VERSION" build_kwok kwok kwokctl ;;
    helm)       install_tool helm "$HELM_VERSION" build_helm helm ;;
    jaeger)     install_tool jaeger "$(key_of "$JAEGER_VERSION" "$here/go/jaeger")" build_jaeger jaeger ;;
    actionlint) install_tool actionlint "$ACTIONLINT_VERSION" build_actionlint actionlint ;;
    registry)   install_tool registry "$(key_of "$REGISTRY_VERSION" "$here/go/registry")" build_registry registry ;;
    promtool)   install_tool promtool "$(key_of "$PROMETHEUS_VERSION" "$here/go/prometheus")" build_promtool promtool ;;
    health)     install_tool health "$(key_of gomod "$here/go/health")" build_health gitops-health ;;
    *) echo "unknown tool: $1" >&2; return 2 ;;
  esac
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(kubernetes kubelet pause etcd kwok helm jaeger actionlint registry promtool health)
for t in "${tools[@]}"; do ( one "$t" ); done
log "all tools ready in $TOOLS_DIR/bin"
