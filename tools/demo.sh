#!/usr/bin/env bash
# The user guide's "Creating Your First ChangeTriggeredJob", run on the local control plane:
# boot (or reuse) the demo cluster, install the CRD, start the operator, create my-config and
# my-first-trigger, patch the ConfigMap, and show the Job succeeding and the CTJ's status.
# The cluster keeps running afterwards; `tools/cluster.sh down changejob-demo` removes it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
name=${DEMO_CLUSTER_NAME:-changejob-demo}
tools="${TOOLS_DIR:-$repo/.tools}/bin"
kubectl="$tools/kubectl"
operator_log="$repo/.cluster/$name-operator.log"
probe_port=${DEMO_PROBE_PORT:-18481}
metrics_port=${DEMO_METRICS_PORT:-18480}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Starting the local Kubernetes control plane ($name)"
"$here/cluster.sh" up "$name" >/dev/null
export KUBECONFIG
KUBECONFIG=$("$here/cluster.sh" kubeconfig "$name")
export PATH="$tools:$PATH"
run kubectl get nodes

say "Installing the CRD"
run kubectl apply --server-side --force-conflicts -f "$repo/crds/"
kubectl wait --for=condition=Established crd/changetriggeredjobs.triggers.changejob.dev --timeout=60s >/dev/null
kubectl create namespace kube-changejob-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# A rerun starts from the guide's first step again.
kubectl delete changetriggeredjob my-first-trigger --ignore-not-found --wait=true >/dev/null
kubectl delete configmap my-config --ignore-not-found >/dev/null

say "Starting the operator (log: $operator_log)"
mkdir -p "$(dirname "$operator_log")"
"$repo/.venv/bin/kube-changejob" run --kubeconfig="$KUBECONFIG" \
  --leader-election-namespace=kube-changejob-system \
  --metrics-bind-address="127.0.0.1:$metrics_port" --health-probe-bind-address="127.0.0.1:$probe_port" \
  >"$operator_log" 2>&1 &
operator_pid=$!
trap 'kill "$operator_pid" 2>/dev/null || true; wait "$operator_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$probe_port/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$operator_pid" 2>/dev/null || { cat "$operator_log"; echo "operator exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$probe_port/readyz" >/dev/null
echo "operator ready"

say "1. Create a ConfigMap to watch"
run kubectl create configmap my-config --from-literal=key=value

say "2. Create the ChangeTriggeredJob (examples/my-first-trigger.yaml)"
run kubectl apply -f "$repo/examples/my-first-trigger.yaml"
for _ in $(seq 1 100); do
  [[ -n "$(kubectl get ctj my-first-trigger -o jsonpath='{.status.resourceHashes[0].lastTriggeredHash}')" ]] && break
  sleep 0.1
done
run kubectl get changetriggeredjobs
echo "(baseline recorded: no Job yet)"
run kubectl get jobs -l changejob.dev/owner=my-first-trigger

say "3. Update the ConfigMap to trigger the job"
run kubectl patch configmap my-config -p '{"data":{"key":"newvalue"}}'
for _ in $(seq 1 100); do
  [[ -n "$(kubectl get jobs -l changejob.dev/owner=my-first-trigger -o name)" ]] && break
  sleep 0.1
done
job=$(kubectl get jobs -l changejob.dev/owner=my-first-trigger -o jsonpath='{.items[0].metadata.name}')
run kubectl wait --for=condition=Complete "job/$job" --timeout=60s
run kubectl get jobs -l changejob.dev/owner=my-first-trigger
for _ in $(seq 1 100); do
  [[ "$(kubectl get ctj my-first-trigger -o jsonpath='{.status.lastJobStatus}')" == Succeeded ]] && break
  sleep 0.1
done

say "4. Status"
run kubectl get changetriggeredjobs
run kubectl get ctj my-first-trigger -o jsonpath='{.status.resourceHashes}'
echo
run kubectl describe changetriggeredjob my-first-trigger

status=$(kubectl get ctj my-first-trigger -o jsonpath='{.status.lastJobStatus}')
say "Done: job $job, lastJobStatus=$status"
echo "The cluster keeps running. To use it:  export KUBECONFIG=$KUBECONFIG"
echo "To remove it:                          tools/cluster.sh down $name"
[[ "$status" == Succeeded ]]
