#!/usr/bin/env bash
# make bench, kvm half: the benchmarks that need a guest kernel to boot on
# our VMM, each a ratio against a peer measured in the same L1 in the same
# run (absolute TCG times mean little):
#   vmm BenchmarkBoot         boot to the test init (the agent's place) and
#                             its vsock round trips + poweroff: our VMM vs
#                             QEMU+KVM microvm, same kernel and initramfs
#   kvmdrv BenchmarkGuestKernel  the project's guest kernel vs the Debian cloud
#                             kernel: boot to a connected agent, guest memory
#                             in use, VM process RSS, initramfs size
#   e2e BenchmarkPodFirstByte pod create+start -> first stdout byte, kvm vs local
#   e2e BenchmarkExecRoundTrip exec /bin/true round trip, kvm vs local
#   e2e BenchmarkDensity      idle pod VMs until start time doubles, host memory
#                             per VM, restored from VM templates and cold
#                             (local's figure is make bench's host run)
#   e2e BenchmarkTemplate     pod VMs restored from a VM template vs booted
#                             cold: create+start -> first stdout byte, host
#                             memory (PSS) per idle pod VM
#   vmm BenchmarkVirtioNet    our virtio-net vs QEMU's userspace one (vhost=off)
#                             over a tap: TCP throughput both ways and RTT,
#                             guest <-> a server in the benchmark's namespace
#   e2e BenchmarkPodNetwork   pod-to-pod TCP throughput and RTT through
#                             hyperd --network cni, kvm vs local, and the time
#                             pod network set-up adds to a pod start
#   e2e/cri BenchmarkCRIOverhead  a pod life cycle through the CRI vs the REST
#                             API of one hyperd --driver kvm (the CRI's image
#                             hot-added to the running pod VM)
#   e2e/cri BenchmarkCritest  critest -benchmark pod and container life
#                             cycles, medians per CRI call, --driver kvm
# Where the host has vmx/svm, make bench's host run already measured them
# and this does nothing; otherwise they run inside the nested runner's L1
# (QEMU TCG, emulated SVM).
set -uo pipefail
cd "$(dirname "$0")/.."
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
	echo "bench: this host has vmx/svm: the kvm benchmarks ran directly above"
	exit 0
fi
out=build/nested/bench
mkdir -p "$out/bin" "$out/tests"
export CGO_ENABLED=0
# stripped as make build does: the agent's size is the initramfs's
for c in hyperd hyperctl hyper-agent; do go build -trimpath -ldflags '-s -w' -o "$out/bin/" "./cmd/$c"; done
go build -trimpath -o "$out/bin/bootinit" ./vmm/testdata/bootinit
go build -trimpath -o "$out/bin/netinit" ./vmm/testdata/netinit
go build -trimpath -o "$out/bin/udpecho" ./e2e/udpecho
go test -c -o "$out/tests/vmm.test" ./vmm
go test -c -o "$out/tests/e2e.test" ./e2e
go test -c -o "$out/tests/kvmdrv.test" ./sandbox/kvmdrv
go test -c -o "$out/tests/e2e-cri.test" ./e2e/cri
# critest, for the CRI benchmarks (scripts/install-cri-tools.sh)
critest=/var/cache/hyperd-tools/cri-tools-$(sed -n 's/^const CritestVersion = "\(.*\)"$/\1/p' e2e/cri/tools.go)
bin=$PWD/$out/bin tests=$PWD/$out/tests
echo "bench: no vmx/svm here: the kvm benchmarks run inside the nested runner's L1 (QEMU TCG, emulated SVM)"
# one L1 per benchmark group: an L1 lost to the emulation (see DefaultCPU in
# e2e/nested/l1.go) costs that group only, and says so
nested() {
	go run ./e2e/nested/nestedrun --out "$out" --mem 6144 --file "$out/bin" --file "$out/tests" \
		--file "$PWD/vmm" --file "$PWD/e2e" --file "$PWD/sandbox/kvmdrv" --file "$critest" --timeout 60m --env HYPERD_NESTED=1 -- sh -c "$1"
}
rc=0
nested "cd $PWD/e2e && HYPERD_TEST_BIN=$bin $tests/e2e.test -test.run '^\$' -test.bench '^(BenchmarkPodFirstByte|BenchmarkExecRoundTrip)\$' -test.benchtime 3x -test.timeout 50m" || rc=1
nested "cd $PWD/e2e && HYPERD_TEST_BIN=$bin $tests/e2e.test -test.run '^\$' -test.bench '^BenchmarkDensity\$/^kvm' -test.benchtime 1x -test.timeout 50m" || rc=1
nested "cd $PWD/e2e && HYPERD_TEST_BIN=$bin $tests/e2e.test -test.run '^\$' -test.bench '^BenchmarkTemplate\$' -test.benchtime 5x -test.timeout 50m" || rc=1
nested "cd $PWD/sandbox/kvmdrv && HYPERD_TEST_BIN=$bin $tests/kvmdrv.test -test.run '^\$' -test.bench '^BenchmarkGuestKernel\$' -test.benchtime 3x -test.timeout 50m" || rc=1
nested "cd $PWD/vmm && HYPERD_TEST_BIN=$bin $tests/vmm.test -test.run '^\$' -test.bench '^BenchmarkBoot\$' -test.benchtime 3x -test.timeout 50m" || rc=1
# 1x: each runs its pairs / traffic runs at least 3 times inside one call;
# pod to pod between two pod VMs moves ~1 MB/s under TCG: 16 MiB each way
nested "cd $PWD/vmm && HYPERD_TEST_BIN=$bin $tests/vmm.test -test.run '^\$' -test.bench '^BenchmarkVirtioNet\$' -test.benchtime 1x -test.timeout 50m" || rc=1
nested "cd $PWD/e2e && HYPERD_E2E_DRIVER=kvm HYPERD_NETBENCH_MIB=16 HYPERD_TEST_BIN=$bin $tests/e2e.test -test.run '^\$' -test.bench '^BenchmarkPodNetwork\$' -test.benchtime 1x -test.timeout 50m" || rc=1
nested "cd $PWD/e2e/cri && HYPERD_E2E_DRIVER=kvm HYPERD_TEST_BIN=$bin $tests/e2e-cri.test -test.run '^\$' -test.bench '^BenchmarkCRIOverhead\$' -test.benchtime 5x -test.timeout 50m" || rc=1
nested "cd $PWD/e2e/cri && HYPERD_E2E_DRIVER=kvm HYPERD_CRITEST_BENCH_N=5 HYPERD_TEST_BIN=$bin $tests/e2e-cri.test -test.run '^\$' -test.bench '^BenchmarkCritest\$' -test.benchtime 1x -test.timeout 50m" || rc=1
exit $rc
