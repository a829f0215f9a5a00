#!/usr/bin/env bash
# make demo: start hyperd on its embedded defaults with a temporary data root
# and socket, load a busybox image built locally from the host's static
# busybox (no network), run a pod that prints something with `hyperctl run`,
# show `hyperctl list`, then stop and clean up. DRIVER picks the sandbox
# driver (auto: kvm where a guest can boot, else local); BUSYBOX_TAR is a
# prebuilt image archive (make demo-kvm passes one into the nested L1).
# hyperd runs in a network namespace of its own (unshare), so the pods'
# network (the default hyper0 bridge, 192.168.123.0/24, written into the
# demo's directory) leaves nothing on the machine; NETWORK=none runs pods
# with loopback only (the nested L1 has no iptables for the masquerade).
set -eu
# pipefail where the shell has it (the nested L1 runs this with dash)
(set -o pipefail) 2>/dev/null && set -o pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
[ -x "$BIN/hyperd" ] && [ -x "$BIN/hyperctl" ] || make build
if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (the sandbox drivers need namespaces or /dev/kvm)" >&2
	exit 1
fi
if [ -z "${BUSYBOX_TAR:-}" ] && [ ! -x /bin/busybox ]; then
	scripts/setup.sh
fi

TMP=$(mktemp -d /tmp/hyperd-demo.XXXXXX)
SOCK=$TMP/hyper.sock
HYPERD_PID=
cleanup() {
	if [ -n "$HYPERD_PID" ] && kill -0 "$HYPERD_PID" 2>/dev/null; then
		kill -TERM "$HYPERD_PID"
		wait "$HYPERD_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

hyperctl() { "$BIN/hyperctl" -H "unix://$SOCK" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting hyperd (data root $TMP/root, socket $SOCK, driver ${DRIVER:-auto})"
if [ "${NETWORK:-cni}" = cni ] && command -v unshare >/dev/null; then
	unshare --net sh -c 'ip link set lo up && exec "$@"' hyperd \
		"$BIN/hyperd" --host "unix://$SOCK" --data-root "$TMP/root" --cri-socket "$TMP/cri.sock" --driver "${DRIVER:-auto}" --cni-conf-dir "$TMP/cni" >"$TMP/hyperd.log" 2>&1 &
else
	"$BIN/hyperd" --host "unix://$SOCK" --data-root "$TMP/root" --cri-socket "$TMP/cri.sock" --driver "${DRIVER:-auto}" --network none >"$TMP/hyperd.log" 2>&1 &
fi
HYPERD_PID=$!
for _ in $(seq 100); do
	hyperctl version >/dev/null 2>&1 && break
	if ! kill -0 "$HYPERD_PID" 2>/dev/null; then
		echo "demo: hyperd exited:" >&2
		cat "$TMP/hyperd.log" >&2
		exit 1
	fi
	sleep 0.1
done
hyperctl version
hyperctl info

step "building a busybox image from /bin/busybox and loading it (no network)"
if [ -n "${BUSYBOX_TAR:-}" ]; then
	cp "$BUSYBOX_TAR" "$TMP/busybox.tar" # built on the host (the nested runner's L1 has no Go)
else
	go run ./e2e/mkbusybox -o "$TMP/busybox.tar" -t busybox:latest
fi
hyperctl load -i "$TMP/busybox.tar"
hyperctl images

step "hyperctl run busybox (a pod that prints)"
hyperctl run --name demo-pod busybox sh -c 'echo "Hello from a hyperd pod: $(hostname), kernel $(uname -r)"'

step "a pod in the background, then hyperctl list"
hyperctl run -d --name demo-sleeper busybox sleep 600
hyperctl list
hyperctl list container
hyperctl exec demo-sleeper echo "exec works too"
hyperctl info demo-sleeper | grep -A1 '"podIP"' || true

step "stop and clean up"
hyperctl stop demo-sleeper
hyperctl rm demo-sleeper demo-pod
hyperctl list
echo
echo "demo: done (hyperd log: stopping it now)"
