// Package initramfs builds the guest initramfs: a newc cpio (u-root's
// pkg/cpio), gzip- or zstd-compressed (zstd for kernels known to unpack
// it: smaller and quicker to unpack), with the static hyper-agent as
// /init, a few /etc files, and the kernel modules the agent loads at boot
// from /lib/modules/order (none for a kernel with its drivers built in).
// Archives are cached under a content hash.
package initramfs
