#!/usr/bin/env bash
# Installs the Debian packages a local feature needs, once: already installed packages are left
# alone, so a second run only checks. Needs root and apt-get (Debian or Ubuntu); elsewhere it says
# what to install and fails.
#
# Usage: tools/host-packages.sh SET...
#   node    containerd, runc, the CNI plugins and nft: the real node of `tools/cluster.sh node-up`
#   image   buildah, debootstrap and busybox-static: `tools/image.sh` (images without a daemon)
#
# Package postinst scripts are kept from starting services (a temporary /usr/sbin/policy-rc.d that
# denies them, unless one exists): the real node runs its own containerd with its own socket and
# state, never the system's.
set -euo pipefail

log() { printf '[packages %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

declare -A SETS=(
  [node]="containerd runc containernetworking-plugins nftables"
  [image]="buildah debootstrap busybox-static"
)

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

main() {
  [[ $# -gt 0 ]] || die "usage: $0 SET... (sets: ${!SETS[*]})"
  local set pkg wanted=() missing=()
  for set in "$@"; do
    [[ -n ${SETS[$set]:-} ]] || die "unknown set: $set (sets: ${!SETS[*]})"
    # shellcheck disable=SC2206
    wanted+=(${SETS[$set]})
  done
  command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
    die "needs Debian's packages ${wanted[*]} (or their equivalents); this host has no apt-get: install them by hand"
  for pkg in "${wanted[@]}"; do installed "$pkg" || missing+=("$pkg"); done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages: ${missing[*]}; install them as root: apt-get install --no-install-recommends ${missing[*]}"
  log "installing ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# kube-changejob tools/host-packages.sh: no service starts during this install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2; then
    log "install failed; refreshing the package lists once"
    apt-get -o DPkg::Lock::Timeout=300 -q update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
  fi
  [[ -z $own_policy ]] || { rm -f "$policy"; trap - EXIT; }
  for pkg in "${missing[@]}"; do installed "$pkg" || die "$pkg is still not installed"; done
  log "installed ${missing[*]}"
}

main "$@"
