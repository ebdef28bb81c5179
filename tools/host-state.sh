#!/usr/bin/env bash
# What a real node (tools/real-node.sh) could leave behind on the host, as text, so that a snapshot
# taken before `tools/cluster.sh up --real-node` and one taken after `tools/cluster.sh down` can be
# compared: kernel settings, nftables and iptables rules, network links, addresses and routes,
# network namespaces, mounts, cgroups, the shared directories, and the processes of container
# runtimes and kubelets.
#
# Usage: tools/host-state.sh snapshot [FILE]            (default: stdout)
#        tools/host-state.sh diff BEFORE AFTER [NODE_DIR]
#   diff prints what differs and exits 1 if anything does. With NODE_DIR (a real node's directory,
#   $CLUSTER_DIR/nodes/NAME), the state of *other* real nodes that may run meanwhile (other clusters,
#   other checkouts) is left out of the comparison: their bridges, veths, cgroups, nftables tables,
#   mounts and processes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Kernel settings that change by themselves (counters, random values, timestamps).
VOLATILE_SYSCTLS='^(kernel\.random\.|kernel\.ns_last_pid|kernel\.pty\.nr|fs\.(dentry-state|inode-nr|inode-state|file-nr|aio-nr|quota\.)|net\.netfilter\.nf_conntrack_count|kernel\.sched_domain|kernel\.perf_event_max_sample_rate|vm\.stat_refresh|net\.ipv4\.route\.flush|net\.ipv6\.route\.flush|fs\.binfmt_misc|kernel\.tainted|kernel\.hung_task_detect_count|fs\.mqueue\.|user\.)'
SHARED_DIRS=(/var/log/containers /var/log/pods /var/lib/cni /run/containerd /run/netns /etc/cni
  /opt/cni /var/lib/kubelet /var/lib/containerd /etc/containerd /usr/libexec/kubernetes)

section() { printf '\n## %s\n' "$1"; }

snapshot() {
  # Every section is best effort: an empty answer (no rules, no such directory) is a valid state.
  set +e +o pipefail
  section sysctl
  # A veth's settings come and go with the veth, which the links section shows.
  sysctl -a 2>/dev/null | grep -Ev "$VOLATILE_SYSCTLS" | grep -Ev '^net\.ipv[46]\.(conf|neigh)\.veth' | sort
  section nftables
  if command -v nft >/dev/null; then nft list ruleset 2>&1; fi
  section iptables
  local t
  for t in iptables-save ip6tables-save; do
    if command -v "$t" >/dev/null; then "$t" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; fi
  done
  section links
  ip -o link show | awk -F': ' '{split($2, n, "@"); m=""; if (match($0, / master [^ ]+/)) m=substr($0, RSTART, RLENGTH); print n[1] m}' | sort
  section addresses
  ip -o addr show | awk '{print $2, $3, $4}' | sort
  section routes
  { ip -4 route show table all; ip -6 route show table all; } 2>/dev/null | grep -v '^fe80\|^local fe80\|^multicast ff00' | sort
  section netns
  ip netns list 2>/dev/null | sort
  section mounts
  findmnt -rn -o TARGET,FSTYPE,SOURCE | sort
  section cgroups
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort
  section directories
  local d
  for d in "${SHARED_DIRS[@]}"; do
    [[ -e $d ]] || continue
    echo "$d"
    find "$d" -mindepth 1 -printf '%p %l\n' 2>/dev/null | sort
  done
  section processes
  # With each process's cgroups, so that a process of another real node can be told apart.
  ps -eo comm=,cgroup=,args= | awk '$1 ~ /^(containerd|containerd-shim|containerd-shim-runc-v2|kubelet|kube-proxy|runc|pause)$/' |
    sed 's/ -id [0-9a-f]*//' | sort
}

# Drops what belongs to real nodes other than the one of NODE_DIR.
others_filter() {  # others_filter NODE_DIR
  local own_id
  own_id=$(printf '%s' "$1" | sha256sum | cut -c1-8)
  awk -v own="$own_id" -v nd="$1/" '
    {
      line = $0; keep = 1; s = line
      while (match(s, /(cj|changejob-)[0-9a-f]{8}/)) {
        id = substr(s, RSTART + RLENGTH - 8, 8)
        if (id != own) keep = 0
        s = substr(s, RSTART + RLENGTH)
      }
      if (line ~ /\/nodes\/[^\/]+\/(containerd|kubelet|runc|cni)\// && index(line, nd) == 0) keep = 0
      if (keep) print line
    }'
}

cmd_diff() {  # cmd_diff BEFORE AFTER [NODE_DIR]
  local before=$1 after=$2 nd=${3:-}
  local a b
  a=$(mktemp); b=$(mktemp)
  # shellcheck disable=SC2064
  trap "rm -f '$a' '$b'" RETURN
  if [[ -n $nd ]]; then
    others_filter "$nd" <"$before" >"$a"; others_filter "$nd" <"$after" >"$b"
  else
    cp "$before" "$a"; cp "$after" "$b"
  fi
  if diff -u --label before --label after "$a" "$b"; then
    echo "host-state: no difference"
  else
    return 1
  fi
}

main() {
  case ${1:-} in
    snapshot)
      if [[ -n ${2:-} ]]; then snapshot >"$2"; else snapshot; fi ;;
    diff)
      [[ $# -ge 3 ]] || { echo "usage: $0 diff BEFORE AFTER [NODE_DIR]" >&2; exit 2; }
      cmd_diff "$2" "$3" "${4:-}" ;;
    *) sed -n '2,/^set -euo/p' "$here/$(basename "${BASH_SOURCE[0]}")" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
