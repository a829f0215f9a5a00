#!/usr/bin/env bash
# make kernel: produce the guest kernel under build/ from Debian's
# linux-image-cloud-amd64 (the versioned package it depends on):
#   build/vmlinux        the uncompressed ELF kernel (booted through its PVH entry)
#   build/vmlinuz        the bzImage (64-bit boot protocol fallback)
#   build/modules/*.ko   the modules the guest needs (virtio, virtio-mmio/pci,
#                        vsock, blk, console, rng, overlay, ext4, erofs), uncompressed
#   build/modules/order  one NAME.ko a line, in load order: every module after
#                        the modules it depends on (computed from modules.dep)
#   build/l1modules/     what the nested runner's L1 (e2e/nested) loads to get
#                        a real /dev/kvm under QEMU's emulated SVM and its
#                        network: kvm, kvm-amd, irqbypass, virtio-net over
#                        virtio-pci, and overlay (the local driver, the
#                        benchmarks' peer in L1), with their dependencies
#                        and an order file
#   build/kernel.release the kernel release string
#
# The .deb and its extracted tree are cached in $KERNEL_CACHE (default
# /var/cache/hyperd-kernel, outside the repo), so a machine downloads the
# package once; build/ is regenerated from the cache when the release or
# this script changes, and left alone otherwise.
#
# Usage: scripts/make-kernel.sh [build]
set -euo pipefail
export LC_ALL=C # byte-wise grep for the compression magics
export PATH=$PATH:/usr/sbin:/sbin
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
case "${1:-build}" in
build) ;;
*) echo "usage: $0 [build]" >&2; exit 2 ;;
esac
t0=$(date +%s.%N)
cache=${KERNEL_CACHE:-/var/cache/hyperd-kernel}
out=build
mkdir -p "$cache" "$out"
say() { echo "make-kernel: $*"; }

# The modules the guest needs, by module name. Those this kernel has built
# in are reported and skipped; the rest must exist as modules, except the
# optional ones (helpers that older or differently configured kernels
# fold into others, and erofs). Their own dependencies come from
# modules.dep whether listed here or not.
want=(
	virtio virtio_ring virtio_mmio virtio_pci
	vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
	virtio_blk virtio_console virtio_rng overlay ext4
)
optional=(virtio_pci_modern_dev virtio_pci_legacy_dev rng_core jbd2 mbcache crc16 crc32c_generic erofs)

need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
missing=()
need lz4 lz4; need zstd zstd; need xz xz-utils; need gzip gzip
need dpkg-deb dpkg; need depmod kmod; need apt-get apt
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Resolve the versioned package behind the metapackage (apt-cache depends
# prints "  Depends: linux-image-6.1.0-NN-cloud-amd64"); with empty package
# lists, update them first.
resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
	say "apt lists lack linux-image-cloud-amd64; running apt-get update"
	apt-get update -q
	pkg=$(resolve || true)
fi
[ -n "$pkg" ] || { echo "make-kernel: cannot resolve linux-image-cloud-amd64 to a versioned package" >&2; exit 1; }
release=${pkg#linux-image-}

# Up to date? The stamp names the release and this script's content.
stamp="$release $(sha256sum "$self" | cut -c1-16)"
if [ "$(cat "$out/.kernel.stamp" 2>/dev/null)" = "$stamp" ] && [ -f "$out/vmlinux" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/config" ] && [ -f "$out/modules/order" ] && [ -f "$out/l1modules/order" ]; then
	say "$out is up to date with $release ($(stat -c %s "$out/vmlinux") bytes vmlinux, $(wc -l <"$out/modules/order") modules)"
	exit 0
fi

deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	say "downloading $pkg into $cache"
	(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg")
	deb=$(ls "$cache/${pkg}"_*.deb | head -n1)
else
	say "using cached $deb"
fi
root="$cache/$release"
if [ ! -d "$root/boot" ]; then
	say "extracting $(basename "$deb")"
	rm -rf "$root.tmp" && mkdir -p "$root.tmp"
	dpkg-deb -x "$deb" "$root.tmp"
	mv "$root.tmp" "$root"
fi
vmlinuz="$root/boot/vmlinuz-$release"
[ -f "$vmlinuz" ] || { echo "make-kernel: $deb has no boot/vmlinuz-$release" >&2; exit 1; }

# Extract the ELF vmlinux from the bzImage. The compressed payload sits
# somewhere inside the decompressor; like the kernel's
# scripts/extract-vmlinux, look for each format's magic bytes, try to
# decompress from every place they occur, and keep the first result that is
# an ELF file (trailing garbage after the stream makes the tools complain;
# the ELF check decides).
is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; }
format="" offset=""
try() { # try NAME MAGIC-REGEX DECOMPRESSOR...
	local name=$1 magic=$2 off
	shift 2
	for off in $(grep -aobUP "$magic" "$vmlinuz" | cut -d: -f1); do
		tail -c +"$((off + 1))" "$vmlinuz" | "$@" >"$out/vmlinux.tmp" 2>/dev/null || true
		if [ -s "$out/vmlinux.tmp" ] && is_elf "$out/vmlinux.tmp"; then
			mv "$out/vmlinux.tmp" "$out/vmlinux"
			format=$name offset=$off
			return 0
		fi
	done
	return 1
}
try zstd '\x28\xb5\x2f\xfd' zstd -dcq ||
	try xz '\xfd\x37\x7a\x58\x5a\x00' xz -dcq ||
	try lz4 '\x02\x21\x4c\x18' lz4 -dcq ||
	try gzip '\x1f\x8b\x08' gzip -dcq ||
	{ command -v bzip2 >/dev/null && try bzip2 'BZh9' bzip2 -dcq; } ||
	{
		rm -f "$out/vmlinux.tmp"
		echo "make-kernel: no compressed ELF kernel found inside $vmlinuz" >&2
		exit 1
	}
cp "$vmlinuz" "$out/vmlinuz"
pvh="unknown (no readelf)"
if command -v readelf >/dev/null; then
	if readelf -n "$out/vmlinux" | grep -q 'Xen.*0x00000012\|PHYS32_ENTRY'; then pvh=yes; else pvh="NO (this kernel cannot boot through PVH)"; fi
fi

# Module dependencies. Debian's package ships no modules.dep; depmod
# computes it from the modules in the extracted tree.
moddir="$root/lib/modules/$release"
[ -f "$moddir/modules.dep" ] || depmod -b "$root" "$release"
norm() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }
declare -A path_of=() deps_of=() seen=() builtin=()
while IFS=: read -r m deps; do
	n=$(norm "$m")
	path_of[$n]=$m
	deps_of[$n]=$deps
done <"$moddir/modules.dep"
while read -r m; do builtin[$(norm "$m")]=1; done <"$moddir/modules.builtin"
order=() builtins=() absent=()
visit() { # depth first: a module's dependencies go before it
	local name=$1 d
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	for d in ${deps_of[$name]:-}; do visit "$(norm "$d")"; done
	order+=("$name")
}
declare -A is_optional=()
for m in "${optional[@]}"; do is_optional[$m]=1; done
for m in "${want[@]}" "${optional[@]}"; do
	if [ -n "${path_of[$m]:-}" ]; then
		visit "$m"
	elif [ -n "${builtin[$m]:-}" ]; then
		builtins+=("$m")
	elif [ -n "${is_optional[$m]:-}" ]; then
		absent+=("$m")
	else
		echo "make-kernel: $release has $m neither as a module nor built in" >&2
		exit 1
	fi
done
rm -rf "$out/modules.tmp" "$out/modules.old" && mkdir -p "$out/modules.tmp"
for name in "${order[@]}"; do
	src="$moddir/${path_of[$name]}"
	case "$src" in
	*.ko.xz) xz -dcq "$src" >"$out/modules.tmp/$name.ko" ;;
	*.ko.zst) zstd -dcq "$src" >"$out/modules.tmp/$name.ko" ;;
	*.ko.gz) gzip -dcq "$src" >"$out/modules.tmp/$name.ko" ;;
	*) cp "$src" "$out/modules.tmp/$name.ko" ;;
	esac
	is_elf "$out/modules.tmp/$name.ko" || { echo "make-kernel: $src did not give an ELF module" >&2; exit 1; }
	echo "$name.ko" >>"$out/modules.tmp/order"
done
[ ! -d "$out/modules" ] || mv "$out/modules" "$out/modules.old"
mv "$out/modules.tmp" "$out/modules"
rm -rf "$out/modules.old"

# The nested runner's L1 modules, in load order: KVM, its NIC, overlay, and
# what pod networks use there (taps, veths, the CNI bridge, tc redirects).
order=() seen=()
for m in irqbypass kvm kvm_amd virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net overlay \
	tun veth bridge sch_ingress cls_u32 act_mirred; do
	if [ -n "${path_of[$m]:-}" ]; then
		visit "$m"
	elif [ -z "${builtin[$m]:-}" ] && [ -z "${is_optional[$m]:-}" ]; then
		echo "make-kernel: $release has $m (for the nested runner's L1) neither as a module nor built in" >&2
		exit 1
	fi
done
rm -rf "$out/l1modules" && mkdir -p "$out/l1modules"
for name in "${order[@]}"; do
	src="$moddir/${path_of[$name]}"
	case "$src" in
	*.ko.xz) xz -dcq "$src" >"$out/l1modules/$name.ko" ;;
	*.ko.zst) zstd -dcq "$src" >"$out/l1modules/$name.ko" ;;
	*.ko.gz) gzip -dcq "$src" >"$out/l1modules/$name.ko" ;;
	*) cp "$src" "$out/l1modules/$name.ko" ;;
	esac
	echo "$name.ko" >>"$out/l1modules/order"
done
# its config: hyperd reads it next to the kernel (CONFIG_RD_ZSTD: which
# initramfs compression the kernel unpacks)
cp "$root/boot/config-$release" "$out/config"
echo "$release" >"$out/kernel.release"
echo "$stamp" >"$out/.kernel.stamp"

t1=$(date +%s.%N)
say "release      $release (package $(basename "$deb"))"
say "vmlinuz      $out/vmlinuz  $(stat -c %s "$out/vmlinuz") bytes"
say "vmlinux      $out/vmlinux  $(stat -c %s "$out/vmlinux") bytes, ELF, $format stream at offset $offset of the bzImage; PVH entry note: $pvh"
say "modules      $out/modules/ ($(du -sb "$out/modules" | cut -f1) bytes), load order:"
i=0
while read -r m; do i=$((i + 1)); printf 'make-kernel:   %2d %-40s %8d bytes\n' "$i" "$m" "$(stat -c %s "$out/modules/$m")"; done <"$out/modules/order"
say "l1modules    $out/l1modules/ (nested runner's L1): $(tr '\n' ' ' <"$out/l1modules/order")"
say "built in     ${builtins[*]:-none}"
[ ${#absent[@]} -eq 0 ] || say "not in this kernel (optional): ${absent[*]}"
say "took         $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s"
