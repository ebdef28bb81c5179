#!/usr/bin/env bash
# The local Kubernetes control plane for tests, benchmarks and the demo.
#
# kwokctl runs the locally built etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
# kwok controller as plain processes ("binary" runtime) on 127.0.0.1 only, with RBAC on. The kwok
# controller plays the kubelet of one fake node, kwok-node-0, and moves pods through the Stages in
# tools/kwokctl.yaml (Job pods succeed; pods labelled changejob.dev/test-fail=true fail). A real
# node, real-node-0, can join beside it (tools/real-node.sh): a kubelet with containerd, tainted so
# that only Pods placed there on purpose run real containers.
#
# Usage: tools/cluster.sh COMMAND [NAME]
#   up [NAME] [--real-node]   create the cluster, or reuse it if it is healthy and up to date; a
#                             crashed, stale or outdated cluster is deleted and created afresh.
#                             With --real-node, also start (or reuse) the real node (node-up).
#                             Prints `export KUBECONFIG=...` on stdout.
#   down [NAME] [--force]     delete the cluster, its real node (undoing its host changes) and its
#                             work directory (refused while a live test session uses it, unless
#                             --force)
#   node-up [NAME]            start the real node of an existing cluster, or reuse it if healthy
#   node-down [NAME]          stop the real node and undo every host change it made
#   kubeconfig [NAME]         print the path of the admin kubeconfig
#   check [NAME]              exit 0 if the cluster is up, healthy and up to date (`up` would reuse
#                             it as it is), 1 otherwise
#   status                    list the clusters under $CLUSTER_DIR and their health
#   apiserver-stop [NAME] [--kill]
#                             stop only kube-apiserver: SIGTERM, then SIGKILL after
#                             $APISERVER_STOP_GRACE seconds (default 2); --kill sends SIGKILL at once
#   apiserver-start [NAME]    start every component that is not running (normally just the
#                             kube-apiserver) and wait until /readyz answers ok
#   apiserver-restart [NAME] [--kill]
#                             apiserver-stop, then apiserver-start
#
# NAME defaults to $CHANGEJOB_CLUSTER_NAME, else changejob-test (the pytest fixture's cluster).
# Environment: CLUSTER_DIR (default <repo>/.cluster, used as KWOK_WORKDIR), TOOLS_DIR (default
# <repo>/.tools; binaries are taken from $TOOLS_DIR/bin), CLUSTER_READY_TIMEOUT (seconds, default 90).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$repo/.tools}
TOOLS_BIN=$TOOLS_DIR/bin
CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-90}
APISERVER_STOP_GRACE=${APISERVER_STOP_GRACE:-2}
DEFAULT_NAME=${CHANGEJOB_CLUSTER_NAME:-changejob-test}
NODE_NAME=kwok-node-0
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)

mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
export KWOK_WORKDIR=$CLUSTER_DIR

# Serialises work on one cluster between invocations (`up` never recreates a cluster whose
# kube-apiserver another invocation is restarting); the lock ".create" serialises the choice of ports.
lock() {  # lock FD NAME
  mkdir -p "$CLUSTER_DIR/locks"
  eval "exec $1>\"\$CLUSTER_DIR/locks/$2.lock\""
  flock -w "${CLUSTER_LOCK_TIMEOUT:-300}" "$1" || die "timed out waiting for the lock $CLUSTER_DIR/locks/$2.lock"
}

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

workdir_of() { echo "$CLUSTER_DIR/clusters/$1"; }
kubeconfig_of() { echo "$(workdir_of "$1")/kubeconfig.yaml"; }
logfile_of() { echo "$CLUSTER_DIR/$1.kwokctl.log"; }
stamp_of() { echo "$(workdir_of "$1")/.changejob-stamp"; }

# The lock descriptors (8, 9) are closed for kwokctl: the components it forks live on and would
# otherwise hold the locks for as long as the cluster runs.
# $TOOLS_BIN leads PATH because kwokctl runs the first kubectl on PATH, not the configured one.
kwokctl() { PATH="$TOOLS_BIN:$PATH" "$TOOLS_BIN/kwokctl" "$@" 8>&- 9>&-; }
kubectl_in() {  # kubectl_in NAME ARGS...
  local name=$1; shift
  "$TOOLS_BIN/kubectl" --kubeconfig "$(kubeconfig_of "$name")" --request-timeout=5s "$@"
}

check_name() {
  [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$ ]] || die "invalid cluster name: $1"
}

check_tools() {
  local b missing=()
  for b in "${BINARIES[@]}"; do
    [[ -x "$TOOLS_BIN/$b" ]] || missing+=("$b")
  done
  [[ ${#missing[@]} -eq 0 ]] || die "missing binaries in $TOOLS_BIN: ${missing[*]} (run: make tools)"
}

# Identifies what a cluster is built from: the configuration template with absolute binary paths
# (ports aside) and the exact binaries. A cluster whose stamp differs (new pin, edited Stages) is
# recreated rather than reused.
current_stamp() {
  {
    sed "s#@TOOLS_BIN@#$TOOLS_BIN#g" "$here/kwokctl.yaml"
    local b
    for b in "${BINARIES[@]}"; do readlink -f "$TOOLS_BIN/$b"; done
  } | sha256sum | cut -c1-16
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports named in any cluster configuration here: a stopped component's port counts as taken.
ports_of_clusters() {
  { cat "$CLUSTER_DIR"/*.kwokctl.yaml "$CLUSTER_DIR"/clusters/*/kwok.yaml 2>/dev/null || true; } |
    sed -n 's/^ *[A-Za-z]*[Pp]ort: *\([0-9][0-9]*\) *$/\1/p' | sort -u
}

# The kwokctl configuration with absolute binary paths and fresh ports, written next to the cluster
# work directory. Run under the creation lock, so no two clusters pick the same port.
config_of() { echo "$CLUSTER_DIR/$1.kwokctl.yaml"; }
render_config() {  # render_config NAME
  local out taken picked="" key port tries
  taken=" $(ports_of_clusters | tr '\n' ' ') "
  out=$(config_of "$1")
  local sed_args=(-e "s#@TOOLS_BIN@#$TOOLS_BIN#g" -e "s#@CLUSTER_WORKDIR@#$(workdir_of "$1")#g")
  for key in KUBE_APISERVER ETCD ETCD_PEER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KWOK_CONTROLLER; do
    tries=0
    while :; do
      port=$((20000 + RANDOM % 10000))
      if [[ $taken != *" $port "* && $picked != *" $port "* ]] && ! port_in_use "$port"; then break; fi
      ((++tries < 500)) || die "found no free port in 20000-29999"
    done
    picked+=" $port "
    sed_args+=(-e "s#@${key}_PORT@#$port#g")
  done
  sed "${sed_args[@]}" "$here/kwokctl.yaml" >"$out.tmp"
  ! grep -q '@[A-Z_]*@' "$out.tmp" || die "unrendered placeholder in $out.tmp"
  mv "$out.tmp" "$out"
}

# Prints the pid in PIDFILE if that process is alive and is this cluster's component (its argv[0]
# lies in the cluster's bin directory). A pid file left by a crash or a reboot may name an unrelated
# process by now; such a pid is never signalled.
component_pid() {  # component_pid NAME COMPONENT
  local wd pidfile pid argv0 state
  wd=$(workdir_of "$1")
  pidfile="$wd/pids/$2.pid"
  [[ -f "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] || return 1
  argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)
  [[ $argv0 == "$wd/bin/"* ]] || return 1
  echo "$pid"
}

# Healthy: every component process runs, /readyz is ok and the fake node is Ready.
healthy() {  # healthy NAME [quiet]
  local name=$1 c
  [[ -f "$(kubeconfig_of "$name")" ]] || { reason="no kubeconfig"; return 1; }
  for c in "${COMPONENTS[@]}"; do
    component_pid "$name" "$c" >/dev/null || { reason="$c is not running"; return 1; }
  done
  kubectl_in "$name" get --raw /readyz >/dev/null 2>&1 || { reason="/readyz fails"; return 1; }
  local ready
  ready=$(kubectl_in "$name" get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || ready=""
  [[ $ready == True ]] || { reason="node $NODE_NAME is not Ready"; return 1; }
  reason=""
}

wait_until() {  # wait_until TIMEOUT DESCRIPTION COMMAND...
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

readyz() { kubectl_in "$1" get --raw /readyz; }
node_ready() {
  [[ $(kubectl_in "$1" get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
default_sa() { kubectl_in "$1" -n default get serviceaccount default; }

show_logs() {  # show_logs NAME: the tail of kwokctl's and every component's log, for diagnosis
  local name=$1 f
  for f in "$(logfile_of "$name")" "$(workdir_of "$name")"/logs/*.log; do
    [[ -f "$f" ]] || continue
    printf '\n----- %s (last 20 lines)\n' "$f" >&2
    tail -n 20 "$f" >&2 || true
  done
}

destroy() {  # destroy NAME: stop and delete, even if the cluster is half-dead
  local name=$1 wd c pid
  wd=$(workdir_of "$name")
  [[ -d "$wd" ]] || return 0
  log "deleting cluster $name"
  # Forget pid files that no longer name this cluster's processes, so kwokctl signals nothing else.
  for c in "${COMPONENTS[@]}"; do
    component_pid "$name" "$c" >/dev/null || rm -f "$wd/pids/$c.pid"
  done
  # --kubeconfig names a file kwokctl may edit instead of ~/.kube/config, which is never touched.
  kwokctl --name "$name" delete cluster --kubeconfig "$CLUSTER_DIR/.kubeconfig-scratch" \
    >>"$(logfile_of "$name")" 2>&1 ||
    log "kwokctl delete failed; removing the cluster by hand"
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$name" "$c"); then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$wd"
}

real_node() { CLUSTER_DIR=$CLUSTER_DIR TOOLS_DIR=$TOOLS_DIR "$here/real-node.sh" "$@" 8>&- 9>&-; }
has_real_node() { [[ -d $CLUSTER_DIR/nodes/$1 ]]; }

create() {  # create NAME CONFIG STAMP
  local name=$1 config=$2 stamp=$3 start logfile
  start=$(now_ms)
  logfile=$(logfile_of "$name")
  : >"$logfile"
  log "creating cluster $name (log: $logfile)"
  if ! kwokctl -c "$config" --name "$name" create cluster --kubeconfig "" \
      --timeout 2m --wait "${READY_TIMEOUT}s" >>"$logfile" 2>&1; then
    show_logs "$name"; destroy "$name"; die "kwokctl create cluster failed"
  fi
  # One fake node, with room for the many short-lived Job pods benchmarks create.
  if ! kwokctl --name "$name" scale node "$NODE_NAME" --replicas 1 --serial-length 0 \
      --param '.allocatable.pods=10000' --param '.allocatable.cpu=1000' \
      --param '.allocatable.memory="4Ti"' >>"$logfile" 2>&1; then
    show_logs "$name"; destroy "$name"; die "kwokctl scale node failed"
  fi
  if ! wait_until "$READY_TIMEOUT" "/readyz" readyz "$name" ||
     ! wait_until "$READY_TIMEOUT" "node $NODE_NAME Ready" node_ready "$name" ||
     ! wait_until "$READY_TIMEOUT" "the default ServiceAccount" default_sa "$name"; then
    show_logs "$name"; destroy "$name"; die "cluster $name did not become ready"
  fi
  echo "$stamp" >"$(stamp_of "$name")"
  local ms=$(( $(now_ms) - start ))
  log "cluster $name ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s"
}

cmd_up() {
  local name=$1 with_node=${2:-} stamp wd users reason=""
  [[ -z $with_node || $with_node == --real-node ]] || die "unknown option for up: $with_node"
  check_tools
  lock 9 "$name"
  stamp=$(current_stamp)
  wd=$(workdir_of "$name")
  if [[ -d "$wd" ]]; then
    if [[ $(cat "$(stamp_of "$name")" 2>/dev/null) != "$stamp" ]]; then
      users=$(live_users "$name" | tr '\n' ' ')
      if [[ -n $users ]] && healthy "$name"; then
        log "cluster $name is outdated but test session(s) ${users% } use it; reusing it as it is"
      else
        log "cluster $name was built from another configuration or other binaries; recreating"
        ! has_real_node "$name" || real_node down "$name"
        destroy "$name"
      fi
    elif ! healthy "$name"; then
      log "cluster $name is not healthy ($reason); recreating"
      ! has_real_node "$name" || real_node down "$name"
      destroy "$name"
    else
      log "reusing healthy cluster $name"
    fi
  fi
  if [[ ! -d "$wd" ]]; then
    # Creation takes a machine-wide lock so two clusters never race for the same free ports.
    lock 8 .create
    render_config "$name"
    create "$name" "$(config_of "$name")" "$stamp"
    flock -u 8
  fi
  if [[ $with_node == --real-node ]]; then real_node up "$name"; fi
  echo "export KUBECONFIG=$(kubeconfig_of "$name")"
}

# Test sessions (tests/integration/conftest.py) register their pid under users/NAME while they use a
# cluster; prints those still alive.
live_users() {  # live_users NAME
  local f pid
  for f in "$CLUSTER_DIR/users/$1"/*; do
    [[ -e "$f" ]] || continue
    pid=${f##*/}
    if [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]]; then echo "$pid"; fi
  done
}

cmd_down() {
  local name=$1 force=${2:-} users
  lock 9 "$name"
  users=$(live_users "$name" | tr '\n' ' ')
  if [[ -n $users && $force != --force ]]; then
    die "cluster $name is in use by test session(s) with pid ${users% }; add --force to delete it anyway"
  fi
  ! has_real_node "$name" || real_node down "$name"
  if [[ -d "$(workdir_of "$name")" ]]; then
    check_tools
    destroy "$name"
    log "cluster $name deleted"
  else
    log "no cluster $name"
  fi
  rm -f "$(config_of "$name")" "$(logfile_of "$name")"
}

cmd_kubeconfig() {
  local kc
  kc=$(kubeconfig_of "$1")
  [[ -f "$kc" ]] || die "no cluster $1 (run: tools/cluster.sh up $1)"
  echo "$kc"
}

cmd_check() {  # succeeds exactly when `up` would reuse the cluster as it is
  local reason=""
  [[ -d "$(workdir_of "$1")" ]] || { log "no cluster $1"; return 1; }
  [[ $(cat "$(stamp_of "$1")" 2>/dev/null) == "$(current_stamp)" ]] ||
    { log "cluster $1 is outdated (other configuration or binaries)"; return 1; }
  healthy "$1" || { log "cluster $1 is not healthy: $reason"; return 1; }
}

cmd_status() {
  local wd name reason server c states
  shopt -s nullglob
  local found=0
  for wd in "$CLUSTER_DIR"/clusters/*/; do
    found=1
    name=$(basename "$wd")
    server=$(awk '/server:/ {print $2; exit}' "$wd/kubeconfig.yaml" 2>/dev/null || true)
    states=""
    for c in "${COMPONENTS[@]}"; do
      if component_pid "$name" "$c" >/dev/null; then states+=" $c=up"; else states+=" $c=DOWN"; fi
    done
    if healthy "$name"; then
      if [[ $(cat "$(stamp_of "$name")" 2>/dev/null) == "$(current_stamp)" ]]; then
        printf '%-20s healthy    %s\n' "$name" "${server:-?}"
      else
        printf '%-20s outdated   %s (the next `up` recreates it)\n' "$name" "${server:-?}"
      fi
    else
      printf '%-20s UNHEALTHY  %s (%s)\n' "$name" "${server:-?}" "$reason"
    fi
    printf '%-20s           %s\n' "" "${states# }"
    if has_real_node "$name"; then printf '%-20s           %s\n' "" "$(real_node status "$name")"; fi
  done
  [[ $found -eq 1 ]] || echo "no clusters in $CLUSTER_DIR"
}

cmd_apiserver_stop() {
  local name=$1 mode=${2:-} pid wd deadline
  wd=$(workdir_of "$name")
  [[ -d "$wd" ]] || die "no cluster $name"
  if ! pid=$(component_pid "$name" kube-apiserver); then
    log "kube-apiserver of $name is not running"
    rm -f "$wd/pids/kube-apiserver.pid"
    return 0
  fi
  if [[ $mode == --kill ]]; then
    log "killing kube-apiserver of $name (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
  else
    # A graceful kube-apiserver shutdown waits for open watch connections (up to a minute), so the
    # grace period is short: the listener closes at once, which is what clients observe.
    log "stopping kube-apiserver of $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + APISERVER_STOP_GRACE))
    while component_pid "$name" kube-apiserver >/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  deadline=$((SECONDS + 10))
  while component_pid "$name" kube-apiserver >/dev/null; do
    ((SECONDS < deadline)) || die "kube-apiserver (pid $pid) does not exit"
    sleep 0.1
  done
  rm -f "$wd/pids/kube-apiserver.pid"
  log "kube-apiserver of $name stopped"
}

cmd_apiserver_start() {
  local name=$1 start
  [[ -d "$(workdir_of "$name")" ]] || die "no cluster $name"
  check_tools
  start=$(now_ms)
  # kwokctl starts only the components whose pid file names no live process; it waits (at most
  # --timeout, then only warns) until the API answers. Readiness is checked below either way.
  kwokctl --name "$name" start cluster --timeout 15s >>"$(logfile_of "$name")" 2>&1 || {
    show_logs "$name"; die "kwokctl start cluster failed"; }
  local deadline=$((SECONDS + READY_TIMEOUT))
  until readyz "$name" >/dev/null 2>&1; do
    component_pid "$name" kube-apiserver >/dev/null || { show_logs "$name"; die "kube-apiserver exited"; }
    ((SECONDS < deadline)) || { show_logs "$name"; die "kube-apiserver not ready after ${READY_TIMEOUT}s"; }
    sleep 0.2
  done
  log "kube-apiserver of $name ready again in $(( ($(now_ms) - start) ))ms"
}

main() {
  local cmd=${1:-help}
  shift || true
  local name=$DEFAULT_NAME
  if [[ $# -gt 0 && $1 != --* ]]; then name=$1; shift; fi
  case $cmd in
    up|down|kubeconfig|check|node-up|node-down|apiserver-stop|apiserver-start|apiserver-restart)
      check_name "$name" ;;
  esac
  case $cmd in
    up) cmd_up "$name" "${1:-}" ;;
    node-up)
      lock 9 "$name"
      [[ -d "$(workdir_of "$name")" ]] || die "no cluster $name (tools/cluster.sh up $name --real-node)"
      real_node up "$name" ;;
    node-down) lock 9 "$name"; real_node down "$name" ;;
    down) cmd_down "$name" "${1:-}" ;;
    kubeconfig) cmd_kubeconfig "$name" ;;
    check) cmd_check "$name" ;;
    status) cmd_status ;;
    apiserver-stop) lock 9 "$name"; cmd_apiserver_stop "$name" "${1:-}" ;;
    apiserver-start) lock 9 "$name"; cmd_apiserver_start "$name" ;;
    apiserver-restart) lock 9 "$name"; cmd_apiserver_stop "$name" "${1:-}"; cmd_apiserver_start "$name" ;;
    help|-h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (try: tools/cluster.sh help)" ;;
  esac
}

main "$@"
