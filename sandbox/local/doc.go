// Package local is the "local" sandbox driver: the same hyper-agent binary
// as in a VM, started as a host process in new pid/mount/uts/ipc/net
// namespaces and reached over a unix socket in the sandbox's state dir. It
// is honest, weaker isolation (no VM). The agent runs in its own session so
// it outlives a killed daemon; Reattach finds it again from the Handle (pid,
// process start time, socket).
package local
