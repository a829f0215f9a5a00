#!/usr/bin/env bash
# make demo-kvm: the demo with every pod in a VM on our VMM (--driver kvm).
# Where the host has vmx/svm it runs directly; where it lacks them (a
# software-nested KVM, as on this project's CI machines) it runs inside the
# nested runner's L1 (QEMU TCG with -cpu max emulating AMD SVM: a real
# /dev/kvm inside), and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
	echo "demo-kvm: this host has hardware virtualization: running the demo with --driver kvm directly"
	DRIVER=kvm exec scripts/demo.sh
fi
echo "demo-kvm: no vmx/svm on this host (its KVM cannot boot a guest kernel): running the demo with --driver kvm"
echo "demo-kvm: inside the nested runner's L1 (QEMU TCG, -cpu max: emulated SVM; pod starts take ~10 s of emulated time)"
out=build/nested/demo
mkdir -p "$out"
go run ./e2e/mkbusybox -o "$out/busybox.tar" -t busybox:latest
exec go run ./e2e/nested/nestedrun --out "$out" --file "$out/busybox.tar" --file scripts --timeout 15m \
	-- env DRIVER=kvm NETWORK=none BUSYBOX_TAR="$PWD/$out/busybox.tar" sh scripts/demo.sh # L1 has busybox sh, no bash
