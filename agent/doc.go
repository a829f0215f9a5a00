// Package agent is the guest agent: it serves agent/PROTOCOL.md on a
// Transport (vsock in a VM, a unix socket in local mode, a serial port or
// virtio-console multiplexed with agent/mux) and runs each
// container under a shim ("hyper-agent init") in its own pid, mount, uts and
// ipc namespaces (and, for the local driver, user namespace: userns.go)
// with an overlay root and pivot_root. The containers share
// the agent's network namespace. Output is captured per process into an
// append-only record file, so attach replays from the first byte and logs
// work after exit.
package agent
