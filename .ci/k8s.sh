#!/usr/bin/env bash
# The kubernetes stage: a real single-node cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy built from the
# Go module proxy; containerd, runc and the CNI plugins from apt) inside
# namespaces of its own, and the tests of e2e/k8s rolling Deployments on it.
# The cluster's cold build is most of the time on a clean machine; it is
# cached in ~/.cache/shutdown-k8s after that. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
(cd e2e/k8s && go vet ./...)
bash e2e/k8s/run.sh
echo "k8s.sh took $(( $(date +%s) - T0 ))s"
