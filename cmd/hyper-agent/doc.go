// Command hyper-agent is the guest agent: PID 1 in a pod VM (vsock), a
// namespaced child of hyperd in local mode (unix socket), and, as
// "hyper-agent init", the per-container shim.
//
// Usage:
//
//	hyper-agent --socket PATH --state-dir DIR [--cgroup-root DIR]   local mode
//	hyper-agent [--vm]                                               as /init of a VM
//	hyper-agent init                                                 container shim (internal)
package main
