// Package client is the daemon side of agent/PROTOCOL.md: Client implements
// sandbox.Agent over a Dialer (unix socket for the local driver, vsock for
// kvm). Requests on the control connection are concurrent; each stream
// (stdio, logs, dial, commit) gets its own connection. Every request is
// bounded by its op's timeout and every stream's hello by one
// (timeouts.go), so a hung agent fails a call rather than hanging it.
package client
