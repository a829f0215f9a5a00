// Package kvmdrv is the "kvm" sandbox driver: every pod is a virtual
// machine booted by hyperd's own VMM, its containers run under the agent
// (PID 1 in the guest), reached over virtio-vsock.
//
// Process model: each VM runs in its own child process ("hyperd vm run"),
// not in the daemon. A guest that wedges a vCPU, a device model bug that
// panics, or a VM that exhausts memory takes down only its own process;
// the daemon sees the process exit and marks the pod failed with the
// reason and the console log. The child is started in its own session so
// it survives a daemon restart (kill -9 included); the daemon finds it
// again from the Handle (pid, vsock socket, console log) and reconnects.
//
// The agent announces itself by connecting to host vsock port 1025 (the
// unix socket <uds>_1025) once it listens; the daemon then reaches it
// through the VM's hybrid vsock unix socket: connect,
// send "CONNECT 1024\n", read "OK <port>\n", then speak the agent
// protocol. Create waits for the agent to answer a ping within BootTimeout
// and otherwise fails with the tail of the console log, after killing the
// VM and removing its socket.
//
// Every guest gets BaseCmdline (a quiet console, reset on panic, no PCI
// probe), then Driver.Cmdline (hyperd --kernel-args).
//
// With Driver.TemplateDir set (hyperd --vm-template, the default) a pod's
// VM is not booted but restored from a VM template (template.go): a
// snapshot of a VM booted the same way, taken once its agent answered,
// one per vCPU/memory size; the restored agent is dialled until it
// answers (its ready signal went to the template's builder) and set up
// with the pod's hostname, clock and entropy. A restore that fails falls
// back to a cold boot.
//
// Disks given after Create (sandbox.DiskAdder: the CRI's containers, each
// with its image) fill empty virtio-blk slots, TemplateDiskSlots block
// devices in all whether the VM was restored or booted (hotplug.go): the
// daemon opens the image and hands the descriptor to the VM process over
// its control socket (control.go, served by hyperd vm run --control), which
// attaches it and raises a configuration change; the Handle lists the
// disks by slot, so a reattached sandbox knows them.
package kvmdrv
