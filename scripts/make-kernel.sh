#!/usr/bin/env bash
# make kernel: produce the guest kernel under build/ from Debian's
# linux-image-cloud-amd64:
#   build/vmlinux        the uncompressed ELF kernel (booted through its PVH entry)
#   build/vmlinuz        the bzImage (64-bit boot protocol fallback)
#   build/modules/*.ko   the modules the guest needs (virtio, vsock, blk, console, rng, overlay)
#   build/modules/order  their load order (dependencies first, from modules.dep)
#   build/kernel.release the kernel release string
# Downloads are cached in $KERNEL_CACHE (outside the repo) so a machine
# fetches the package once.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
cd "$(dirname "$0")/.."
cache=${KERNEL_CACHE:-/var/cache/hyperd-kernel}
out=build
mkdir -p "$cache" "$out"

need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
missing=()
need lz4 lz4; need zstd zstd; need xz xz-utils; need dpkg-deb dpkg; need depmod kmod
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Resolve the versioned package behind the metapackage.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	apt-get update -q
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "make-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
release=${pkg#linux-image-}

if [ -f "$out/kernel.release" ] && [ "$(cat "$out/kernel.release")" = "$release" ] && [ -f "$out/vmlinux" ] && [ -f "$out/modules/order" ]; then
	echo "make-kernel: $out has $release already"
	exit 0
fi

deb=$(ls "$cache"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	(cd "$cache" && apt-get download "$pkg")
	deb=$(ls "$cache"/"${pkg}"_*.deb | head -n1)
fi
root="$cache/$release"
if [ ! -d "$root/boot" ]; then
	rm -rf "$root.tmp" && mkdir -p "$root.tmp"
	dpkg-deb -x "$deb" "$root.tmp"
	mv "$root.tmp" "$root"
fi
vmlinuz="$root/boot/vmlinuz-$release"

# Extract the ELF vmlinux: find each compression magic in the bzImage and
# try to decompress from there until the result is an ELF file.
extract() {
	local magic=$1; shift
	local off
	for off in $(grep -aobUP "$magic" "$vmlinuz" 2>/dev/null | cut -d: -f1); do
		tail -c +"$((off + 1))" "$vmlinuz" | "$@" >"$out/vmlinux.tmp" 2>/dev/null || true
		if [ "$(head -c 4 "$out/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = "7f454c46" ]; then
			mv "$out/vmlinux.tmp" "$out/vmlinux"
			return 0
		fi
	done
	return 1
}
rm -f "$out/vmlinux"
extract '\x02\x21\x4c\x18' lz4 -dc ||
	extract '\x28\xb5\x2f\xfd' zstd -dc ||
	extract '\xfd\x37\x7a\x58\x5a\x00' xz -dc ||
	extract '\x1f\x8b\x08' gzip -dc || { rm -f "$out/vmlinux.tmp"; echo "make-kernel: no ELF kernel inside $vmlinuz" >&2; exit 1; }
cp "$vmlinuz" "$out/vmlinuz"

# Modules the guest needs, with their dependencies first.
moddir="$root/lib/modules/$release"
want=(virtio virtio_ring virtio_mmio virtio_pci vsock vmw_vsock_virtio_transport_common
	vmw_vsock_virtio_transport virtio_blk virtio_console virtio_rng overlay erofs)
[ -f "$moddir/modules.dep" ] || depmod -b "$root" "$release"
declare -A path_of=() deps_of=() seen=()
while IFS=: read -r m deps; do
	name=$(basename "$m"); name=${name%%.ko*}; name=${name//-/_}
	path_of[$name]=$m
	deps_of[$name]=$deps
done < <(sed 's/: */:/' "$moddir/modules.dep")
order=()
visit() {
	local name=$1 d dn
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	for d in ${deps_of[$name]:-}; do
		dn=$(basename "$d"); dn=${dn%%.ko*}; dn=${dn//-/_}
		visit "$dn"
	done
	order+=("$name")
}
for m in "${want[@]}"; do
	if [ -n "${path_of[$m]:-}" ]; then
		visit "$m"
	elif grep -q "/${m//_/[-_]}.ko" "$moddir/modules.builtin" 2>/dev/null; then
		echo "make-kernel: $m is built in"
	else
		echo "make-kernel: $m is neither a module nor built in; skipped"
	fi
done
rm -rf "$out/modules" && mkdir -p "$out/modules"
: >"$out/modules/order"
for name in "${order[@]}"; do
	src="$moddir/${path_of[$name]}"
	case "$src" in
	*.ko.xz) xz -dc "$src" >"$out/modules/$name.ko" ;;
	*.ko.zst) zstd -qdc "$src" >"$out/modules/$name.ko" ;;
	*.ko.gz) gzip -dc "$src" >"$out/modules/$name.ko" ;;
	*) cp "$src" "$out/modules/$name.ko" ;;
	esac
	echo "$name.ko" >>"$out/modules/order"
done
echo "$release" >"$out/kernel.release"
echo "make-kernel: $release: $(du -h "$out/vmlinux" | cut -f1) vmlinux, modules: $(tr '\n' ' ' <"$out/modules/order")"
