// Package sandbox defines the contract between the daemon core (package pod)
// and the sandbox drivers that run a pod: "local" (the agent as a host
// process in fresh namespaces, reached over a unix socket) and "kvm" (the
// agent as PID 1 of a VM booted by our VMM, reached over virtio-vsock).
//
// It owns only interfaces, plain data types and ProcStat (the /proc
// reader both drivers use for host figures); drivers live in
// sandbox/local and sandbox/kvmdrv, the agent client in agent/client.
package sandbox
