#!/usr/bin/env bash
# A real Kubernetes node, real-node-0, beside the kwok node of a local cluster (tools/cluster.sh):
# the kubelet built from the pinned k8s.io/kubernetes module (tools/build.sh kubelet), containerd,
# runc and the bridge CNI plugin from Debian's packages (tools/host-packages.sh node), images from
# tools/image.sh. tools/cluster.sh runs it (`node-up`, `node-down`, `up --real-node`, `down`).
#
# Usage: tools/real-node.sh COMMAND [NAME]
#   up [NAME]       start the node of cluster NAME, or reuse it if it is healthy; load the images
#   down [NAME]     stop it and undo every change it made to the host
#   status [NAME]   say whether it runs and is Ready
#   socket [NAME]   print its containerd socket; exit 1 if containerd does not run
#   check-host      exit 0 if this host can run a real node, else print why not and exit 1
#
# What it is and what it changes on the host, all undone by `down` (docs/development.md):
# - everything the node keeps lives under $CLUSTER_DIR/nodes/NAME: containerd's root, state, socket
#   and runc state, the kubelet's root, certificates and pod logs, the CNI configuration and IP
#   allocations, logs and pid files;
# - a bridge cj<id> with the node IP (10.250.N.1/24) that the pods' veths join. The pods reach only
#   the API server: an nftables table changejob-<id> sends the `kubernetes` Service address
#   (10.0.0.1:443) to the API server on 127.0.0.1 (route_localnet on the bridge only), drops any
#   other packet from the pods to the host and any packet routed to or from the bridge;
# - cgroups /changejob-<id> (the kubelet's cgroupRoot; containerd and the kubelet run in
#   /changejob-<id>/node), so `down` finds and kills every process the node started;
# - the kernel settings the kubelet sets when it starts (kernel.panic, kernel.panic_on_oops,
#   vm.overcommit_memory, vm.panic_on_oom, kernel.keys.root_max*): put back as soon as the node is
#   Ready, and again by `down`;
# - shared directories some components insist on (/var/log/containers for the kubelet's log links,
#   /var/lib/cni for CNI's cache, /run/containerd/s for the shims' sockets, the kubelet's device
#   plugin socket in /var/lib/kubelet/device-plugins): our entries are removed, and the directory
#   too if it did not exist before.
# The kubelet creates no iptables chains (makeIPTablesUtilChains: false); no kube-proxy runs: the
# API server calls webhooks and the Service proxy at Pod IPs (--enable-aggregator-routing), so
# several clusters' nodes can run on one host at once, each with its own bridge and addresses.
#
# In the cluster: the node is tainted changejob.dev/real-node=true:NoSchedule, so only Pods placed
# there on purpose run real containers; a MutatingAdmissionPolicy (tools/real-node.yaml) places the
# Pods of namespaces labelled changejob.dev/real-node=true there, tolerating the taint and using the
# node's local images (imagePullPolicy Always becomes IfNotPresent: there is no registry).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$repo/.tools}
TOOLS_BIN=$TOOLS_DIR/bin
CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
READY_TIMEOUT=${NODE_READY_TIMEOUT:-120}
NODE_NAME=real-node-0
NODE_TAINT_KEY=changejob.dev/real-node
SERVICE_IP=10.0.0.1  # the `kubernetes` Service: first address of kube-apiserver's default range
PLACEMENT_NAMESPACE=changejob-real-node  # made by tools/real-node.yaml, labelled for the real node
KERNEL_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
SHARED_DIRS=(/var/log/containers /var/log/pods /var/lib/cni /run/containerd /run/netns /etc/cni
  /opt/cni /var/lib/kubelet /var/lib/containerd /etc/containerd /usr/libexec/kubernetes)

log() { printf '[node %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- names and paths -------------------------------------------------------------------------------

setup_names() {  # setup_names NAME: every path and name of the node of cluster NAME
  NAME=$1
  WD=$CLUSTER_DIR/clusters/$NAME            # kwokctl's work directory (pki, kubeconfig)
  ND=$CLUSTER_DIR/nodes/$NAME
  mkdir -p "$CLUSTER_DIR"
  ND=$(cd "$CLUSTER_DIR" && pwd)/nodes/$NAME
  ID=$(printf '%s' "$ND" | sha256sum | cut -c1-8)
  BRIDGE=cj$ID
  CGROUP=changejob-$ID
  NFT_TABLE=changejob-$ID
  CNI_NETWORK=changejob-$ID
  SOCK=$ND/containerd/containerd.sock
  KUBECONFIG_ADMIN=$WD/kubeconfig.yaml
  ((${#SOCK} + 7 < 108)) || die "the containerd socket path is too long for a unix socket: $SOCK"
}

kubectl_admin() { "$TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=10s "$@"; }
ctr_node() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

# The pid in $ND/pids/NAME.pid, if that process is alive and runs BINARY.
daemon_pid() {  # daemon_pid NAME BINARY
  local f=$ND/pids/$1.pid pid exe
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == "$(readlink -f "$2")" ]]
  echo "$pid"
}

# --- cgroups ---------------------------------------------------------------------------------------

cgroup_v2() { [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; }

# The hierarchies our cgroups live in: every v1 hierarchy (one directory each), or the v2 root.
cgroup_roots() {
  if cgroup_v2; then echo /sys/fs/cgroup; return; fi
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f ${d}cgroup.procs ]] && echo "${d%/}"
  done
}

make_cgroups() {
  local root parent
  for root in $(cgroup_roots); do
    mkdir -p "$root/$CGROUP"
    if [[ $root == */cpuset ]]; then  # a v1 cpuset takes tasks only once it has cpus and mems
      cat "$root/cpuset.cpus" >"$root/$CGROUP/cpuset.cpus"
      cat "$root/cpuset.mems" >"$root/$CGROUP/cpuset.mems"
    fi
    if cgroup_v2; then
      parent=$(cat "$root/cgroup.subtree_control")
      local c ctl=""
      for c in $parent; do ctl+=" +$c"; done
      [[ -z $ctl ]] || echo "${ctl# }" >"$root/$CGROUP/cgroup.subtree_control"
    fi
    mkdir -p "$root/$CGROUP/node"
    if [[ $root == */cpuset ]]; then
      cat "$root/cpuset.cpus" >"$root/$CGROUP/node/cpuset.cpus"
      cat "$root/cpuset.mems" >"$root/$CGROUP/node/cpuset.mems"
    fi
  done
}

# Every process in the node's cgroups (containerd, its shims, the kubelet, every container).
cgroup_pids() {
  local root
  for root in $(cgroup_roots); do
    [[ -d $root/$CGROUP ]] || continue
    find "$root/$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# Kills every process in the node's cgroups; frozen first (v1 freezer, v2 cgroup.freeze), so no
# process forks a child the sweep misses.
kill_cgroups() {
  local freezer="" pids tries=0
  if cgroup_v2; then
    [[ -d /sys/fs/cgroup/$CGROUP ]] || return 0
    if [[ -f /sys/fs/cgroup/$CGROUP/cgroup.kill ]]; then echo 1 >"/sys/fs/cgroup/$CGROUP/cgroup.kill"; fi
  elif [[ -d /sys/fs/cgroup/freezer/$CGROUP ]]; then
    freezer=/sys/fs/cgroup/freezer/$CGROUP
    echo FROZEN >"$freezer/freezer.state" 2>/dev/null || freezer=""
  fi
  while pids=$(cgroup_pids) && [[ -n $pids ]]; do
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    [[ -z $freezer ]] || echo THAWED >"$freezer/freezer.state" 2>/dev/null || true
    ((++tries < 100)) || die "processes in cgroup $CGROUP survive SIGKILL: $(echo $pids)"
    sleep 0.1
  done
  [[ -z $freezer ]] || echo THAWED >"$freezer/freezer.state" 2>/dev/null || true
}

remove_cgroups() {
  local root
  for root in $(cgroup_roots); do
    [[ -d $root/$CGROUP ]] || continue
    find "$root/$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d $root/$CGROUP ]] || log "WARNING: cannot remove cgroup $root/$CGROUP"
  done
}

# Starts a daemon in the node's cgroups, its own session, its output in $ND/logs/NAME.log.
start_daemon() {  # start_daemon NAME COMMAND...
  local name=$1; shift
  local roots
  roots=$(cgroup_roots | tr '\n' ' ')
  # The lock descriptors of tools/cluster.sh (8, 9) are closed: the daemon must not hold them.
  setsid bash -c 'for r in $1; do echo $$ >"$r/$2/node/cgroup.procs"; done; shift 2; exec "$@"' \
    start-daemon "$roots" "$CGROUP" "$@" >>"$ND/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$ND/pids/$name.pid"
}

stop_daemon() {  # stop_daemon NAME BINARY [GRACE]: SIGTERM, SIGKILL after GRACE seconds (default 10)
  local pid deadline
  pid=$(daemon_pid "$1" "$2") || { rm -f "$ND/pids/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${3:-10}))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$ND/pids/$1.pid"
}

# --- host state ------------------------------------------------------------------------------------

record_host() {
  mkdir -p "$ND/host"
  local s d
  for s in "${KERNEL_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$ND/host/sysctl"
  for d in "${SHARED_DIRS[@]}"; do [[ -e $d ]] && echo "$d"; done >"$ND/host/dirs" || true
}

restore_sysctls() {
  [[ -f $ND/host/sysctl ]] || return 0
  local kv
  while read -r kv; do
    [[ $(sysctl -n "${kv%%=*}") == "${kv#*=}" ]] || sysctl -q -w "$kv" || log "WARNING: cannot restore $kv"
  done <"$ND/host/sysctl"
}

# Our entries in the shared directories; then the directory itself if it was not there before.
clean_shared_dirs() {
  local d link
  for link in /var/log/containers/*.log; do
    [[ -L $link && $(readlink "$link") == "$ND/"* ]] && rm -f "$link"
  done
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  # Every kubelet listens for device plugins on this fixed path, whatever its root directory; it
  # goes once no kubelet runs.
  if [[ -S /var/lib/kubelet/device-plugins/kubelet.sock ]] && ! ps -C kubelet >/dev/null; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  fi
  [[ -f $ND/host/dirs ]] || return 0
  for d in "${SHARED_DIRS[@]}"; do
    grep -qxF "$d" "$ND/host/dirs" && continue
    [[ -d $d ]] || continue
    # Only empty directories go (another node's files stay); innermost first.
    find "$d" -depth -type d -empty -delete 2>/dev/null || true
    [[ ! -e $d ]] || log "WARNING: $d was created by the node but is not empty; left in place"
  done
}

umount_node() {  # unmounts everything below $ND, innermost first
  local m tries=0
  while m=$(findmnt -rn -o TARGET | awk -v d="$ND/" 'index($0, d) == 1' | sort -r) && [[ -n $m ]]; do
    while read -r t; do umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || true; done <<<"$m"
    ((++tries < 10)) || die "cannot unmount under $ND: $m"
  done
}

# --- the network -----------------------------------------------------------------------------------

# A /24 for the pods: 10.250.N.0/24 with no address or route of the host in it.
pick_subnet() {
  local n i used
  used=$( { ip -4 -o addr show; ip -4 route show table all; } 2>/dev/null)
  n=$((16#${ID:0:2}))
  for ((i = 0; i < 256; i++)); do
    if ! grep -q "10\.250\.$(((n + i) % 256))\." <<<"$used"; then
      echo "10.250.$(((n + i) % 256))"
      return
    fi
  done
  die "no free /24 in 10.250.0.0/16 for the pods"
}

make_network() {  # make_network PREFIX API_PORT
  local prefix=$1 api_port=$2
  ip link add "$BRIDGE" type bridge
  ip addr add "$prefix.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Packets to 127.0.0.1 arriving on this bridge may be routed (only those the DNAT below made).
  sysctl -q -w "net.ipv4.conf.$BRIDGE.route_localnet=1"
  nft -f - <<EOF
table ip $NFT_TABLE {
  # The pods' in-cluster API address (the kubernetes Service) is the API server on the host.
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$BRIDGE" ip daddr $SERVICE_IP tcp dport 443 dnat to 127.0.0.1:$api_port
  }
  # From the pods the host accepts only that, and answers to connections the host opened.
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "$BRIDGE" ct state established,related accept
    iifname "$BRIDGE" ct status dnat ip daddr 127.0.0.1 tcp dport $api_port accept
    iifname "$BRIDGE" drop
  }
  # Nothing is routed between the pods and any other network.
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
    oifname "$BRIDGE" iifname != "$BRIDGE" drop
  }
}
EOF
}

remove_network() {
  local link
  if command -v nft >/dev/null; then nft delete table ip "$NFT_TABLE" 2>/dev/null || true; fi
  # veths still attached (their namespace is gone once the processes are): delete them with the bridge.
  for link in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

# --- configuration files ---------------------------------------------------------------------------

# A client certificate for the kubelet, user system:node:real-node-0 in group system:nodes, signed
# by the cluster's CA: the Node authorizer gives it exactly a node's rights.
make_node_cert() {
  local dir=$ND/kubelet/client
  mkdir -p "$dir"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/node.key" \
    -subj "/O=system:nodes/CN=system:node:$NODE_NAME" -out "$dir/node.csr" 2>/dev/null
  openssl x509 -req -in "$dir/node.csr" -CA "$WD/pki/ca.crt" -CAkey "$WD/pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 30 -out "$dir/node.crt" \
    -extfile <(printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n') 2>/dev/null
  chmod 600 "$dir/node.key"
}

write_configs() {  # write_configs PREFIX API_PORT
  local prefix=$1 api_port=$2
  mkdir -p "$ND"/containerd "$ND"/cni/{net.d,ipam} "$ND"/kubelet/{root,serving,pod-logs,volume-plugins} \
    "$ND"/runc "$ND"/logs "$ND"/pids
  cat >"$ND/containerd/config.toml" <<EOF
version = 2
root = "$ND/containerd/root"
state = "$ND/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ND/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/changejob/pause:1"
  # runc cannot lower oom_score_adj below the caller's without CAP_SYS_RESOURCE, which root may
  # lack in a VM or container; the kubelet asks for -998 for sandboxes.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$ND/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ND/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$ND/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$prefix.0/24", "gateway": "$prefix.1"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$prefix.1"}],
        "dataDir": "$ND/cni/ipam"
      }
    }
  ]
}
EOF
  make_node_cert
  cat >"$ND/kubelet/kubeconfig.yaml" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    certificate-authority: $WD/pki/ca.crt
    server: https://127.0.0.1:$api_port
users:
- name: $NODE_NAME
  user:
    client-certificate: $ND/kubelet/client/node.crt
    client-key: $ND/kubelet/client/node.key
contexts:
- name: local
  context: {cluster: local, user: $NODE_NAME}
current-context: local
EOF
  cat >"$ND/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Served on the node IP only; the API server authenticates with the cluster CA's admin certificate
# (--kubelet-client-certificate) and every request is authorized by a SubjectAccessReview.
address: $prefix.1
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $WD/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
failCgroupV1: false
failSwapOn: false
podLogsDir: $ND/kubelet/pod-logs
volumePluginDir: $ND/kubelet/volume-plugins
makeIPTablesUtilChains: false
# No cluster DNS: Pods get an empty resolv.conf rather than the host's.
resolvConf: ""
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
# The images cannot be pulled again (there is no registry): never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
maxPods: 60
EOF
}

# --- commands --------------------------------------------------------------------------------------

# Why this host cannot run a real node (empty: it can).
host_problem() {
  [[ $(uname -s) == Linux ]] || { echo "not Linux"; return; }
  [[ $(id -u) -eq 0 ]] || { echo "not root (containerd, the kubelet, cgroups and the bridge need root)"; return; }
  [[ -d /sys/fs/cgroup && -n $(cgroup_roots) ]] || { echo "no cgroup file system under /sys/fs/cgroup"; return; }
  if ! command -v apt-get >/dev/null; then
    local c
    for c in containerd runc nft ip openssl; do
      command -v "$c" >/dev/null || { echo "$c is missing and there is no apt-get to install it"; return; }
    done
    [[ -x /usr/lib/cni/bridge ]] || { echo "the CNI plugins are missing (/usr/lib/cni) and there is no apt-get"; return; }
  fi
  [[ -w /proc/sys/net/ipv4/ip_forward ]] || { echo "/proc/sys is read-only (a container without privileges?)"; return; }
}

cmd_check_host() {
  local problem
  problem=$(host_problem)
  [[ -z $problem ]] || { echo "this host cannot run a real node: $problem"; return 1; }
}

node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

node_healthy() {
  [[ -f $ND/node.env ]] && daemon_pid containerd "$(command -v containerd)" >/dev/null &&
    daemon_pid kubelet "$TOOLS_BIN/kubelet" >/dev/null && node_ready
}

wait_until() {  # wait_until TIMEOUT DESCRIPTION COMMAND...
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

show_node_logs() {
  local f
  for f in "$ND"/logs/*.log; do
    [[ -f $f ]] || continue
    printf '\n----- %s (last 25 lines)\n' "$f" >&2
    tail -n 25 "$f" >&2 || true
  done
}

load_images() {
  local f
  for f in "${IMAGE_DIR:-$repo/build/image}"/archives/*.tar; do
    [[ -f $f ]] || continue
    ctr_node images import "$f" >/dev/null || die "ctr images import $f failed"
  done
}

cmd_up() {
  local problem start=$SECONDS api_port prefix svc_ip
  problem=$(host_problem)
  [[ -z $problem ]] || die "this host cannot run a real node: $problem"
  [[ -f $KUBECONFIG_ADMIN ]] || die "no cluster $NAME (tools/cluster.sh up $NAME)"
  if node_healthy; then
    log "reusing the healthy node $NODE_NAME of cluster $NAME"
    return 0
  fi
  "$here/host-packages.sh" node
  [[ -x $TOOLS_BIN/kubelet ]] || "$here/build.sh" kubelet >&2
  "$here/image.sh" build node
  [[ ! -d $ND ]] || { log "removing the remains of an earlier node"; cmd_down; }

  api_port=$(sed -n 's#^ *server: https://127.0.0.1:\([0-9]*\)$#\1#p' "$KUBECONFIG_ADMIN")
  [[ $api_port =~ ^[0-9]+$ ]] || die "cannot read the API server's port from $KUBECONFIG_ADMIN"
  svc_ip=$(kubectl_admin -n default get service kubernetes -o 'jsonpath={.spec.clusterIP}')
  [[ $svc_ip == "$SERVICE_IP" ]] || die "the kubernetes Service is at $svc_ip, not $SERVICE_IP"
  mkdir -p "$ND/logs" "$ND/pids"
  record_host
  prefix=$(pick_subnet)
  printf 'NODE_NAME=%s\nNODE_IP=%s\nPOD_SUBNET=%s\nBRIDGE=%s\nCGROUP=%s\nAPI_PORT=%s\n' \
    "$NODE_NAME" "$prefix.1" "$prefix.0/24" "$BRIDGE" "$CGROUP" "$api_port" >"$ND/node.env"
  log "starting node $NODE_NAME of cluster $NAME: IP $prefix.1, pods $prefix.0/24, bridge $BRIDGE"
  remove_network  # a bridge or table left by a crash would make the next steps fail or add rules twice
  make_network "$prefix" "$api_port"
  make_cgroups
  write_configs "$prefix" "$api_port"

  start_daemon containerd "$(command -v containerd)" --config "$ND/containerd/config.toml"
  if ! wait_until 30 "containerd" ctr --address "$SOCK" version; then
    show_node_logs; die "containerd did not start"
  fi
  load_images
  start_daemon kubelet "$TOOLS_BIN/kubelet" --config="$ND/kubelet/config.yaml" \
    --kubeconfig="$ND/kubelet/kubeconfig.yaml" --root-dir="$ND/kubelet/root" \
    --cert-dir="$ND/kubelet/serving" --hostname-override="$NODE_NAME" --node-ip="$prefix.1" --v=1
  if ! wait_until "$READY_TIMEOUT" "node $NODE_NAME Ready" node_ready; then
    show_node_logs; die "node $NODE_NAME did not become Ready"
  fi
  # The kubelet set its kernel tunables while starting; the host gets its own values back now.
  restore_sysctls
  kubectl_admin apply --server-side --force-conflicts -f "$here/real-node.yaml" >/dev/null
  # The API server takes the new policy into account a moment later; Pods created before would
  # land on the kwok node.
  if ! wait_until 60 "the placement policy" policy_in_effect; then
    die "the placement policy (tools/real-node.yaml) does not take effect"
  fi
  log "node $NODE_NAME of cluster $NAME ready in $((SECONDS - start))s"
}

cmd_down() {
  [[ -d $ND ]] || { log "no real node in cluster $NAME"; return 0; }
  local pids start=$SECONDS
  log "stopping node $NODE_NAME of cluster $NAME"
  if daemon_pid kubelet "$TOOLS_BIN/kubelet" >/dev/null && node_ready; then
    # The kubelet stops the Pods itself (sandboxes, CNI, volumes); cordoned, none comes back.
    kubectl_admin cordon "$NODE_NAME" >/dev/null 2>&1 || true
    kubectl_admin delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=1 \
      --wait=false >/dev/null 2>&1 || true
    wait_until 60 "the node's containers to stop" no_tasks || true
    log "pods stopped after $((SECONDS - start))s"
  fi
  stop_daemon kubelet "$TOOLS_BIN/kubelet"
  stop_daemon containerd "$(command -v containerd)"
  local sockets
  sockets=$(shim_sockets)
  kill_cgroups
  # shellcheck disable=SC2086
  [[ -z $sockets ]] || rm -f $sockets
  umount_node
  remove_cgroups
  remove_network
  restore_sysctls
  clean_shared_dirs
  if [[ -f $KUBECONFIG_ADMIN ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    kubectl_admin delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=0 --force \
      >/dev/null 2>&1 || true
    kubectl_admin delete node "$NODE_NAME" --ignore-not-found >/dev/null 2>&1 || true
    kubectl_admin delete --ignore-not-found -f "$here/real-node.yaml" >/dev/null 2>&1 || true
  fi
  pids=$(cgroup_pids)
  [[ -z $pids ]] || die "processes of the node still run: $pids"
  [[ -z $(findmnt -rn -o TARGET | awk -v d="$ND/" 'index($0, d) == 1') ]] || die "mounts remain under $ND"
  rm -rf --one-file-system "$ND"
  rmdir "$CLUSTER_DIR/nodes" 2>/dev/null || true
  log "node $NODE_NAME of cluster $NAME removed in $((SECONDS - start))s"
}

no_tasks() { [[ -z $(ctr_node tasks list --quiet 2>/dev/null) ]]; }

# A Pod created (dry run) in the namespace real-node.yaml makes for the node gets the node's name.
policy_in_effect() {
  local probe
  probe="{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"generateName\": \"placement-probe-\","
  probe+=" \"namespace\": \"$PLACEMENT_NAMESPACE\"}, \"spec\": {\"containers\": [{\"name\": \"probe\","
  probe+=" \"image\": \"busybox:latest\"}]}}"
  [[ $(kubectl_admin create --dry-run=server -f - \
    -o 'jsonpath={.spec.nodeSelector.kubernetes\.io/hostname}' <<<"$probe") == "$NODE_NAME" ]]
}

# The sockets of the node's shims (/run/containerd/s/<hash>: containerd 1.6 keeps them there whatever
# its state directory); a shim killed rather than stopped leaves its socket behind.
shim_sockets() {
  local f
  for f in "$ND"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f $f ]] || continue
    sed -n 's#^unix://\(/run/containerd/s/[0-9a-f]*\)$#\1#p' "$f"
  done
}

cmd_status() {
  if [[ ! -d $ND ]]; then echo "no real node"; return 0; fi
  local state=""
  daemon_pid containerd "$(command -v containerd)" >/dev/null && state+=" containerd=up" || state+=" containerd=DOWN"
  daemon_pid kubelet "$TOOLS_BIN/kubelet" >/dev/null && state+=" kubelet=up" || state+=" kubelet=DOWN"
  node_ready && state+=" Ready" || state+=" NotReady"
  echo "$NODE_NAME$state ($(grep -h '^NODE_IP=' "$ND/node.env" 2>/dev/null | cut -d= -f2))"
}

cmd_socket() {
  daemon_pid containerd "$(command -v containerd || echo containerd)" >/dev/null || return 1
  echo "$SOCK"
}

main() {
  local cmd=${1:-help}
  shift || true
  local name=${1:-${CHANGEJOB_CLUSTER_NAME:-changejob-test}}
  case $cmd in
    up|down|status|socket)
      [[ $name =~ ^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$ ]] || die "invalid cluster name: $name"
      setup_names "$name"
      "cmd_$cmd" ;;
    check-host) cmd_check_host ;;
    help|-h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (try: tools/real-node.sh help)" ;;
  esac
}

main "$@"
