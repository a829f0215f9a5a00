// Package e2e holds the end-to-end tests of hyperd: they build the real
// binaries, start hyperd on a temporary socket and data root, and go through
// every route with the Go client (api/client) and with
// `curl --unix-socket`, then kill -9 the daemon and check that a new one
// gets every record back and reattaches the running pods.
//
// The local driver always runs; the kvm driver runs where the host has
// hardware virtualization (vmx/svm) and the driver is compiled in. The
// summary printed at the end says which drivers ran. Missing pieces (no
// root, no busybox, a driver or the image store not built in) are test
// failures with the reason, never silent skips.
//
// imgtest builds the busybox test image (a docker-archive) from Debian's
// busybox-static; mkbusybox is its command for scripts/demo.sh.
package e2e
