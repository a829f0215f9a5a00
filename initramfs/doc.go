// Package initramfs builds the guest initramfs: a gzip-compressed newc cpio
// (u-root's pkg/cpio) with the static hyper-agent as /init, a few /etc
// files, and the kernel modules the agent loads at boot from
// /lib/modules/order. Archives are cached under a content hash.
package initramfs
