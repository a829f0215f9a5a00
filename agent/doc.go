// Package agent is the guest agent: it serves agent/PROTOCOL.md on a
// Transport (vsock in a VM, a unix socket in local mode, a serial port or
// virtio-console multiplexed with agent/mux) and runs each
// container under a shim ("hyper-agent init") in its own pid, mount, uts and
// ipc namespaces (and, for the local driver, user namespace: userns.go)
// with an overlay root and pivot_root. The containers share
// the agent's network namespace. Output is captured per process into an
// append-only record file, so attach replays from the first byte and logs
// work after exit.
//
// A VM may be a restore of a template (a snapshot taken once the agent was
// ready, before any setup): the pod's setup then gives it its own clock
// and RNG state (identity.go), its NIC the pod's MAC (network.go), and
// containers wait for the disks attached at restore to have a size
// (disk.go).
package agent
