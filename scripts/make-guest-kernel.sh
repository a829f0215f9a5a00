#!/usr/bin/env bash
# make kernel, second part: build the pod VM's own kernel, everything built
# in (no modules), from Debian's linux-source-6.12 package with the config
# fragment guest/kernel/hyperd.config over allnoconfig:
#   build/guest/vmlinux       the ELF kernel hyperd boots by default (PVH)
#   build/guest/config        its full .config
#   build/guest/kernel.release
# Its object tree stays in $KERNEL_CACHE/obj-<version> so that a changed
# fragment rebuilds only what the changed options touch.
# The build is cached in $KERNEL_CACHE (default /var/cache/hyperd-kernel)
# under the source package's version and a hash of the fragment and this
# script: a machine builds it once, and again only when either changes.
#
# Usage: scripts/make-guest-kernel.sh
set -euo pipefail
export LC_ALL=C
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
t0=$(date +%s)
cache=${KERNEL_CACHE:-/var/cache/hyperd-kernel}
pkg=linux-source-6.12
frag=guest/kernel/hyperd.config
out=build/guest
say() { echo "make-guest-kernel: $*"; }
mkdir -p "$cache" "$out"
# one build at a time per cache (they share the object tree)
exec 9>"$cache/.guest-kernel.lock"
flock 9

# the source package and the tools a kernel build needs
need=()
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
for t in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils perl:perl; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
for h in /usr/include/libelf.h:libelf-dev /usr/include/openssl/ssl.h:libssl-dev; do
	[ -e "${h%%:*}" ] || need+=("${h#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
ver=$(dpkg-query -W -f='${Version}' "$pkg")
hash=$(cat "$frag" "$self" | sha256sum | cut -c1-16)
dir="$cache/guest-$ver-$hash"

if [ ! -s "$dir/vmlinux" ]; then
	src="$cache/src-$ver"
	if [ ! -f "$src/.extracted" ]; then
		say "extracting $pkg $ver"
		rm -rf "$src" && mkdir -p "$src"
		tar -xf /usr/src/linux-source-6.12.tar.xz -C "$src" --strip-components=1
		touch "$src/.extracted"
	fi
	# one object tree per source version: a changed fragment rebuilds only
	# what its options touch (kbuild tracks each file's CONFIG_ uses)
	obj="$cache/obj-$ver"
	mkdir -p "$obj"
	say "configuring (allnoconfig + $frag)"
	make -s -C "$src" O="$obj" ARCH=x86_64 KCONFIG_ALLCONFIG="$PWD/$frag" allnoconfig
	# every option the fragment sets must have held (a dependency it
	# lacks would silently drop it)
	bad=0
	while IFS= read -r l; do
		case "$l" in CONFIG_*=*) ;; *) continue ;; esac
		k=${l%%=*} v=${l#*=}
		if [ "$v" = n ]; then
			if grep -q "^$k=" "$obj/.config"; then say "$k is set, the fragment says n"; bad=1; fi
		elif ! grep -qx "$k=$v" "$obj/.config"; then
			say "$k=$v did not hold: $(grep "^$k=\|# $k is not set" "$obj/.config" || echo absent)"
			bad=1
		fi
	done <"$frag"
	[ $bad = 0 ] || { say "the fragment does not hold on $pkg $ver"; exit 1; }
	say "building vmlinux with $(nproc) jobs"
	make -s -C "$src" O="$obj" ARCH=x86_64 -j"$(nproc)" vmlinux
	mkdir -p "$dir"
	make -s -C "$src" O="$obj" ARCH=x86_64 kernelrelease >"$dir/kernel.release"
	cp "$obj/.config" "$dir/config"
	cp "$obj/vmlinux" "$dir/vmlinux.new" && mv "$dir/vmlinux.new" "$dir/vmlinux"
	say "built in $(($(date +%s) - t0)) s"
fi
for f in vmlinux config kernel.release; do
	cmp -s "$dir/$f" "$out/$f" 2>/dev/null || cp "$dir/$f" "$out/$f"
done
say "build/guest/vmlinux  $(cat "$out/kernel.release"), $(($(stat -c %s "$out/vmlinux") / 1024)) KiB ($pkg $ver, config $hash)"
