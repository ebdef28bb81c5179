#!/usr/bin/env bash
# A short demo on the local control plane: boot (or reuse) the demo cluster, run a Job and show it
# completing. The cluster keeps running afterwards; `tools/cluster.sh down changejob-demo` removes it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
name=${DEMO_CLUSTER_NAME:-changejob-demo}
namespace=demo
kubectl="${TOOLS_DIR:-$repo/.tools}/bin/kubectl"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the local Kubernetes control plane ($name)"
"$here/cluster.sh" up "$name" >/dev/null
export KUBECONFIG
KUBECONFIG=$("$here/cluster.sh" kubeconfig "$name")
"$kubectl" get nodes

say "Creating a Job in namespace $namespace"
"$kubectl" create namespace "$namespace" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
"$kubectl" -n "$namespace" delete job hello --ignore-not-found --wait=true >/dev/null
"$kubectl" -n "$namespace" apply -f - <<'EOF'
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: hello
        image: busybox:1.37
        command: ["sh", "-c", "echo hello from the demo"]
EOF

say "Waiting for the Job to complete"
"$kubectl" -n "$namespace" wait --for=condition=Complete job/hello --timeout=60s
"$kubectl" -n "$namespace" get job hello -o wide
"$kubectl" -n "$namespace" get pods -l job-name=hello -o wide

say "Done"
echo "The cluster keeps running. To use it:  export KUBECONFIG=$KUBECONFIG"
echo "To remove it:                          tools/cluster.sh down $name"
