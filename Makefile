# hyperd in Go. See README.md.
SHELL := /bin/bash
GO ?= go
# Go from the official tarball lives here on a fresh machine.
export PATH := /usr/local/go/bin:$(PATH)
export CGO_ENABLED := 0
LDFLAGS := -s -w -extldflags=-static
BIN := bin
# 1 where the host has no usable /dev/kvm (internal/kvmtest): probed
# read-only, so nothing is created where there is no device.
NO_KVM = $$( [ -c /dev/kvm ] && (exec 3</dev/kvm) 2>/dev/null && echo 0 || echo 1)
# Guest kernel cache: outside the repo so a machine fetches or builds it once.
KERNEL_CACHE ?= /var/cache/hyperd-kernel

.PHONY: all build test test-short bench demo demo-kvm setup kernel vet fmt clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The whole test suite (what .ci/run calls). Needs root.
# Packages run one at a time (-p 1): the guest boot tests emulate ring-0
# code on software-nested KVM, and the nested runner's L1 (e2e/nested)
# runs QEMU's TCG on both cores.
# The local driver's suite runs twice: with a user namespace (hyperd's
# default where the host can) and without (--local-userns=off).
# It ends by printing which end-to-end suites ran: local, and kvm (pods in
# our VMs: directly with vmx/svm, else inside the nested runner's L1).
# On a host without a usable /dev/kvm the packages that need one skip here
# (HYPERD_NO_KVM=1, internal/kvmtest) and run whole inside the nested
# runner's L1 (e2e/nested TestKVMSuites), which has a real one.
test: fmt vet build kernel
	@rm -f build/e2e-report.txt
	@if [ "$(NO_KVM)" = 1 ]; then echo "make test: no usable /dev/kvm here: the kvm and vmm packages' tests run inside the nested runner's L1"; fi
	CGO_ENABLED=1 HYPERD_E2E_REPORT=$(CURDIR)/build/e2e-report.txt HYPERD_NO_KVM=$(NO_KVM) $(GO) test -race -count=1 -p 1 -timeout 60m ./...; \
	rc=$$?; \
	echo "the local driver's suite again without a user namespace (hyperd --local-userns=off):"; \
	CGO_ENABLED=1 HYPERD_LOCAL_USERNS=off $(GO) test -race -count=1 ./sandbox/local || rc=1; \
	cat build/e2e-report.txt 2>/dev/null || echo "=== e2e sandbox drivers: the e2e package did not run"; exit $$rc

# Benchmarks report ratios against a peer measured in the same run. The
# boot and density benchmarks run once (a software-nested boot takes minutes;
# density starts pods until their start time doubles).
bench: build kernel
	HYPERD_NO_KVM=$(NO_KVM) $(GO) test -run '^$$' -bench . -skip 'BenchmarkBoot|Density' -benchtime 3x -timeout 30m ./...
	HYPERD_NO_KVM=$(NO_KVM) $(GO) test -run '^$$' -bench 'BenchmarkBoot|Density' -benchtime 1x -timeout 30m ./vmm ./e2e
	scripts/bench-nested.sh

# The Debian packages everything here needs (shared with .ci/run).
setup:
	scripts/setup.sh

# Two guest kernels: the Debian cloud kernel with its modules (build/vmlinux,
# build/modules; the nested runner's L1 and a tested --kernel option), and
# the project's own, everything built in (build/guest/vmlinux from
# guest/kernel/hyperd.config; hyperd's default). Both are cached in
# KERNEL_CACHE: ours is built once per (source version, config).
kernel: setup
	KERNEL_CACHE=$(KERNEL_CACHE) scripts/make-kernel.sh build
	KERNEL_CACHE=$(KERNEL_CACHE) scripts/make-guest-kernel.sh

demo: setup build
	scripts/demo.sh

# The demo with every pod in a VM: directly with vmx/svm, else inside the
# nested runner's L1 (e2e/nested).
demo-kvm: setup build kernel
	scripts/demo-kvm.sh

clean:
	rm -rf $(BIN) build
