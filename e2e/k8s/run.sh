#!/usr/bin/env bash
# run.sh: the one command for the real-Kubernetes tests. As root, it
#
#  1. installs what apt has (containerd, runc, the CNI plugins, conntrack,
#     iptables) if missing, and builds etcd and the Kubernetes components
#     (build.sh, cached outside the repository);
#  2. starts a single-node cluster inside a network namespace and a private
#     mount namespace of its own, both held by one `sleep`: a veth pair with
#     both ends inside, its own resolv.conf, /run and /var/log as tmpfs, every
#     component started with nsenter into both;
#  3. imports images of the programs built from this checkout (a static
#     binary in an OCI layout tar each, no registry);
#  4. runs the Go tests beside this file inside the namespaces, so their load
#     reaches only the cluster's own addresses;
#  5. tears everything down on exit, failure included, and checks that no
#     process, mount, cgroup, namespace or sysctl change is left behind.
#
# Extra arguments go to the test binary (e.g. -test.run TestRollout).
# K8S_STATE (default /var/tmp/shutdown-k8s) holds the node's files while it
# runs; K8S_LOGS (default /tmp/shutdown-k8s-logs) keeps the logs of a failed
# run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
S=${K8S_STATE:-/var/tmp/shutdown-k8s}
LOGS=${K8S_LOGS:-/tmp/shutdown-k8s-logs}
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
T0=$SECONDS
say() { echo "run.sh: [$((SECONDS - T0))s] $*" >&2; }

[[ $(id -u) == 0 ]] || { echo "run.sh: needs root (namespaces, cgroups, containerd)" >&2; exit 1; }
missing=()
for c in containerd:containerd runc:runc conntrack:conntrack iptables:iptables ip:iproute2 openssl:openssl nsenter:util-linux sysctl:procps mount:mount; do
	command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || missing+=(containernetworking-plugins)
if ((${#missing[@]})); then
	say "apt-get install ${missing[*]}"
	for try in 1 2 3; do
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null && break
		((try < 3)) || exit 1
		sleep 5
	done
fi
# One node at a time on a machine: every run uses $S, the host's kubepods
# cgroups (whose processes teardown kills) and the kernel's sysctls, so a
# second run would wipe the first one's state and kill its pods. It waits
# for the first instead (fd 9 is closed for everything started below, so
# only this script holds the lock).
mkdir -p /run/lock
exec 9>/run/lock/shutdown-k8s.lock
if ! flock -n 9; then
	say "another run holds /run/lock/shutdown-k8s.lock; waiting for it (20 min at most)"
	flock -w 1200 9 || { say "gave up waiting for the other run"; exit 1; }
fi
# Teardown kills every process in the kubepods cgroups and removes them: if
# they are here before the node starts, they are another kubelet's (this
# machine is a node) or an earlier run's that was SIGKILLed. Leave them be.
for h in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/*/kubepods.slice; do
	if [[ -d $h ]]; then
		say "$h exists: another kubelet runs here, or an earlier run was killed before its teardown; not starting (remove it and its processes first)"
		exit 1
	fi
done
say "building the cluster (cached after the first time)"
bin=$("$here/build.sh")
say "cluster binaries in $bin"

# The sysctls the kubelet sets at start (it has no way to leave them).
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
declare -A saved
for k in "${sysctls[@]}"; do saved[$k]=$(sysctl -n "$k"); done

holder="" netns="" mntns=""
madedirs=() # folders made on the host, removed at teardown
pids=()
names=()
teardown() {
	local rc=$? left=()
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ -d $S/log ]]; then
		rm -rf "$LOGS" && cp -r "$S/log" "$LOGS"
		for f in "$LOGS"/*.log; do
			echo "----- last lines of $f"
			tail -n 15 "$f"
		done >&2
		say "full logs in $LOGS"
	fi
	((rc == 0)) || say "failed ($rc)"
	say "teardown"
	# The tests and their kubectl watches first: the API server waits for
	# open watches when it stops.
	kill_until_gone test_pids
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}" "${names[i]}"; done
	# Containers and their shims outlive the kubelet and containerd.
	kill_until_gone kubepods_pids
	[[ -n $holder ]] && kill_until_gone in_holder_pids
	if [[ -n $holder ]]; then
		stop "$holder" holder
	fi
	for h in /sys/fs/cgroup/*/kubepods; do
		[[ -d $h ]] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	for k in "${sysctls[@]}"; do sysctl -qw "$k=${saved[$k]}"; done
	rm -rf "$S"
	for d in "${madedirs[@]}"; do rmdir "$d"; done
	# What must not be left behind:
	for p in "${pids[@]}" $holder; do [[ -d /proc/$p ]] && left+=("process $p"); done
	for p in $(in_netns_pids); do left+=("process $p in the node's namespaces"); done
	grep -qF -e " $S/" -e " $S " /proc/self/mountinfo && left+=("a mount at or under $S")
	for h in /sys/fs/cgroup/*/kubepods; do [[ -d $h ]] && left+=("cgroup $h"); done
	for k in "${sysctls[@]}"; do [[ $(sysctl -n "$k") == "${saved[$k]}" ]] || left+=("sysctl $k"); done
	[[ -e $S ]] && left+=("folder $S")
	for d in "${madedirs[@]}"; do [[ -e $d ]] && left+=("folder $d"); done
	if ((${#left[@]})); then
		say "teardown LEFT: ${left[*]}"
		((rc != 0)) || rc=1
	else
		say "teardown clean: no process, mount, cgroup, namespace or sysctl change left"
	fi
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# stop PID NAME: SIGTERM, wait for it by pid up to 15 s, then SIGKILL.
stop() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$2 ($pid) ignored SIGTERM for 15 s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}
kubepods_pids() { find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null; }
# in_holder_pids: every process but the holder in the node's mount or
# network namespace (one that entered the network namespace alone would
# keep it, its links and its iptables rules alive).
in_holder_pids() {
	local p
	for p in $(in_netns_pids); do [[ $p != "$holder" ]] && echo "$p"; done
}
in_netns_pids() {
	local p
	[[ -n $netns ]] || return 0
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$mntns" || $(readlink "$p/ns/net" 2>/dev/null) == "$netns" ]] && echo "${p#/proc/}"
	done
}
test_pids() {
	local p
	for p in $(in_holder_pids); do
		case $(cat "/proc/$p/comm" 2>/dev/null) in k8s.test | kubectl) echo "$p" ;; esac
	done
}
# kill_until_gone LISTER: SIGKILL what LISTER prints until it prints nothing
# (30 s at most).
kill_until_gone() {
	local i p
	for ((i = 0; i < 300; i++)); do
		p=$($1 | tr '\n' ' ')
		[[ -z ${p// /} ]] && return 0
		kill -KILL $p 2>/dev/null
		sleep 0.1
	done
	say "still alive after SIGKILL: $p"
}
# poll WHAT SECONDS COMMAND...: a set-up step, retried until it succeeds.
poll() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	say "gave up waiting for $what after ${secs}s: $*"
	return 1
}

if [[ -e $S ]]; then
	say "$S is there from an earlier run that did not tear down; removing it"
	rm -rf "$S"
fi
mkdir -p "$S"/{log,pki,etcd,kubelet,kubelet-plugins,images,cni/net.d,cni/ipam,containerd/root,containerd/state,containerd/opt}

# Paths that the kubelet and containerd's CNI library write whatever their
# flags say: each gets a tmpfs inside the mount namespace. Those missing on
# the host are made as empty mount points and removed at teardown.
hostdirs=(/var/lib/kubelet /var/lib/cni /usr/libexec/kubernetes)
for d in "${hostdirs[@]}"; do
	[[ -d $d ]] && continue
	mkdir -p "$d"
	madedirs+=("$d")
done

# The namespaces: one process holds a new network and mount namespace, and
# every component enters both. Mounts made inside stay inside.
unshare --net --mount --propagation private sleep infinity 9>&- &
holder=$!
in_namespaces() { [[ $(readlink "/proc/$holder/ns/net") != "$(readlink /proc/$$/ns/net)" ]]; }
poll "the namespace holder" 10 in_namespaces
netns=$(readlink "/proc/$holder/ns/net")
mntns=$(readlink "/proc/$holder/ns/mnt")
in=(nsenter -t "$holder" -m -n)
printf 'nameserver 127.0.0.1\n' >"$S/resolv.conf"
"${in[@]}" sh -ec "
	mount -t tmpfs tmpfs /run
	mount -t tmpfs tmpfs /var/log
	for d in ${hostdirs[*]}; do mount -t tmpfs tmpfs \$d; done
	mount --bind '$S/resolv.conf' /etc/resolv.conf
	ip link set lo up
	ip link add k8s0 type veth peer name k8s1
	ip addr add 10.200.0.1/24 dev k8s0
	ip addr add 10.200.0.2/24 dev k8s1
	ip link set k8s0 up
	ip link set k8s1 up
	ip route add default dev k8s0
	sysctl -qw net.ipv4.ip_forward=1
"

# start NAME COMMAND...: a component inside the namespaces, logging to
# $S/log/NAME.log.
start() {
	local name=$1
	shift
	"${in[@]}" "$@" >"$S/log/$name.log" 2>&1 9>&- &
	pids+=($!)
	names+=("$name")
}
kc=$S/kubeconfig
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$token,admin,admin,system:masters" >"$S/pki/tokens.csv"
openssl genrsa -out "$S/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$S/pki/sa.key" -pubout -out "$S/pki/sa.pub" 2>/dev/null
cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: node, context: {cluster: node, user: admin}}]
current-context: node
EOF
kubectl=("${in[@]}" "$bin/kubectl" --kubeconfig "$kc")

say "starting etcd and the control plane"
start etcd "$bin/etcd" --name node --data-dir "$S/etcd" --unsafe-no-fsync --log-level warn \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster node=http://127.0.0.1:2380
start kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
	--secure-port=6443 --bind-address=0.0.0.0 --advertise-address=10.200.0.1 --cert-dir="$S/pki/apiserver" \
	--service-cluster-ip-range=10.201.0.0/24 --token-auth-file="$S/pki/tokens.csv" --authorization-mode=AlwaysAllow \
	--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$S/pki/sa.pub" \
	--service-account-signing-key-file="$S/pki/sa.key" --disable-admission-plugins=ServiceAccount \
	--kubelet-preferred-address-types=InternalIP --enable-priority-and-fairness=false --profiling=false
poll "the API server" 90 "${kubectl[@]}" get --raw /readyz
start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$kc" --leader-elect=false \
	--secure-port=0 --service-account-private-key-file="$S/pki/sa.key" --use-service-account-credentials=false
start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$kc" --leader-elect=false --secure-port=0

say "starting containerd, the kubelet and kube-proxy"
cat >"$S/containerd.toml" <<EOF
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$S/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$S/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "shutdown.local/pause:1"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni/net.d"
EOF
cat >"$S/cni/net.d/10-bridge.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "bridge", "bridge": "cni0",
 "isGateway": true, "ipMasq": false, "hairpinMode": true,
 "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam", "ranges": [[{"subnet": "10.202.0.0/24"}]],
  "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
start containerd containerd --config "$S/containerd.toml"
poll "containerd" 30 "${in[@]}" ctr --address "$S/containerd.sock" version
cat >"$S/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$S/containerd.sock
failSwapOn: false
address: 10.200.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
resolvConf: $S/resolv.conf
volumePluginDir: $S/kubelet-plugins
localStorageCapacityIsolation: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF
start kubelet "$bin/kubelet" --config="$S/kubelet.yaml" --kubeconfig="$kc" --root-dir="$S/kubelet" --cert-dir="$S/kubelet/pki" \
	--hostname-override=node --node-ip=10.200.0.1
start kube-proxy "$bin/kube-proxy" --kubeconfig="$kc" --hostname-override=node --proxy-mode=iptables \
	--cluster-cidr=10.202.0.0/16 --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
	--conntrack-tcp-timeout-close-wait=0 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256

say "building and importing the images"
(
	cd "$root"
	export CGO_ENABLED=0
	go build -trimpath -o "$S/images/httpserver" ./examples/httpserver
	cd "$here"
	go build -trimpath -o "$S/images/pause" ./cmd/pause
	go build -trimpath -o "$S/images/service" ./cmd/service
	go build -trimpath -o "$S/images/ociimage" ./cmd/ociimage
	go test -c -o "$S/k8s.test" .
)
for img in pause httpserver service; do
	"$S/images/ociimage" -bin "$S/images/$img" -name "shutdown.local/$img:1" -o "$S/images/$img.tar"
	"${in[@]}" ctr --address "$S/containerd.sock" -n k8s.io images import "$S/images/$img.tar" >/dev/null
done
node_ready() { [[ $("${kubectl[@]}" get node node -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
poll "the node to be Ready" 120 node_ready
poll "the default service account" 60 "${kubectl[@]}" get serviceaccount default
say "node Ready; running the tests"
# In the background and waited for, so that a SIGINT or SIGTERM to this
# script tears down at once (bash runs traps only between commands).
"${in[@]}" env KUBECONFIG="$kc" K8S_BIN="$bin" "$S/k8s.test" -test.v -test.count=1 -test.timeout=12m "$@" 9>&- &
wait $!
say "tests passed"
