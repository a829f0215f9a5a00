#!/usr/bin/env bash
# The Debian packages hyperd's build, demo and tests need, installed where
# missing. Shared by `make demo`, `make demo-kvm`, `make test` and .ci/run,
# so a fresh Debian 12 machine needs nothing by hand.
#
# make/gcc/git: the build and -race; linux-libc-dev: <linux/kvm.h> for the
# kvm header-layout test; busybox-static: the test and demo images, and the
# nested runner's shell; qemu-system-x86: the boot peer, the TCG guest
# harness and the nested runner's L1; docker-registry/skopeo/apache2-utils
# (htpasswd): registry tests; e2fsprogs: image disks; lz4/zstd/xz-utils:
# kernel extraction; cpio: initramfs checks; iproute2: networking;
# acpica-tools: the ACPI table test; kmod: depmod for the kernel modules;
# curl/procps: the e2e suites; linux-source-6.12 flex bison bc libelf-dev
# libssl-dev: building the project's guest kernel (make kernel,
# scripts/make-guest-kernel.sh, which also installs them when run alone);
# containernetworking-plugins iptables: pod networks (CNI bridge, host-local,
# firewall, portmap; the bridge's masquerade and the firewall use iptables).
set -euo pipefail
pkgs=(make gcc git curl ca-certificates linux-libc-dev busybox-static qemu-system-x86
	docker-registry skopeo e2fsprogs lz4 zstd xz-utils cpio apache2-utils iproute2
	acpica-tools kmod procps linux-source-6.12 flex bison bc libelf-dev libssl-dev
	containernetworking-plugins iptables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# cri-tools (critest, crictl) at a pinned version, for the CRI tests
# (e2e/cri) and the README's crictl walk-through: built once per machine
# into /var/cache/hyperd-tools.
"$(dirname "$0")/install-cri-tools.sh"
