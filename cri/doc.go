// Package cri is hyperd's Kubernetes Container Runtime Interface (CRI v1,
// k8s.io/cri-api) server: the RuntimeService and ImageService over gRPC on
// a unix socket of their own (hyperd --cri-socket, default
// /var/run/hyperd/cri.sock, mode 0660, root). It is a sibling of package
// api: both are front ends over the same daemon core (pod.Core), so there is
// one state, one set of records in bbolt, one path to the sandboxes.
//
// # The mapping
//
//   - PodSandbox = a pod of type "sandbox" (pod.PodTypeSandbox): its
//     sandbox (a VM with the kvm driver, namespaces with local) lives from
//     RunPodSandbox (CreatePod + StartPod with no container) to
//     StopPodSandbox (StopPod), whatever its containers do; a REST pod stops
//     its sandbox once its containers have all exited, a CRI pod does not,
//     because the kubelet creates, starts, removes and re-creates
//     containers one by one. The sandbox id is the pod id (32 hex digits: see newSandboxID).
//     READY = the pod's phase is Running; anything else is NOTREADY.
//   - CRI container = a container of that pod (Core.CreateContainer,
//     StartContainer, ...), restart policy never: the kubelet restarts
//     containers by creating new ones. The container id is the core's id.
//     CREATED = pending and never started, RUNNING = running, EXITED =
//     exited; a CRI container is started once (StartContainer of an
//     exited container is refused, as in containerd).
//   - ImageService = the daemon's image store (package image), with the
//     registry mirrors of hyperd --registry-mirror for pulls.
//
// # One state
//
// Nothing is kept beside the core's records. What the CRI knows about a pod
// or container that the core has no field for (its metadata name, uid,
// namespace and attempt, its annotations, the log directory and log path,
// the image as the kubelet named it, mounts) is stored as JSON in one label
// of the pod (LabelSandbox, "io.hyperd.cri.sandbox") or container
// (LabelContainer, "io.hyperd.cri.container"), beside the kubelet's own
// labels. So CRI pods and containers are ordinary pods and containers for
// the REST API and hyperctl (hyperctl list shows them, hyperctl info shows
// the labels), they survive a kill -9 and restart of hyperd like any other
// (their sandboxes are reattached by the core), and the CRI lists exactly
// the pods and containers that carry those labels: a pod made through REST
// is not a PodSandbox (it has no CRI metadata); it is recognisable the other
// way. Labels of the kubelet that use the reserved keys are refused.
//
// # Logs
//
// The core keeps every container's output on the host (pod/logs.go). The
// CRI server copies it, as it arrives, into the file the kubelet names
// (log_directory of the sandbox + log_path of the container) in the CRI log
// format ("<RFC3339Nano time> <stdout|stderr> <F|P> <line>": F for a line
// that ended with a newline, P for a part of a longer one). A follower per
// started container does this (logs.go); after a restart of hyperd the
// follower of every CRI container whose output may not be in its file yet
// resumes after the last time its file holds. ReopenContainerLog reopens
// the file at its path (the kubelet's log rotation renamed the old one).
// A container is reported EXITED once its follower has copied its last
// output (or after a bounded wait), so the file is complete when the
// kubelet sees the exit.
//
// # Security context and namespaces
//
// What the sandbox drivers honour is mapped; what they cannot honour is an
// InvalidArgument error naming the field, never a silent success:
//
//   - run_as_user, run_as_username, run_as_group, supplemental_groups,
//     readonly_rootfs: the container's user and read-only root.
//   - network NODE, pid NODE or TARGET, ipc NODE (host namespaces), pid POD
//     (one pid namespace for the pod): refused. A pod VM has no host
//     namespaces to join, and the agent gives each container its own pid
//     namespace (pid CONTAINER is what every container gets).
//   - ipc POD, the kubelet's default, is accepted: the containers share the
//     pod's sandbox, but each has its own IPC namespace in it (SysV IPC and
//     POSIX message queues are not shared between containers of a pod).
//     This is the one accepted field with weaker semantics than runc's; it
//     is listed in the README.
//   - seccomp and AppArmor: unset, Unconfined and RuntimeDefault are
//     accepted. Every container gets the agent's fixed seccomp filter,
//     Docker's default profile (which is what containerd's RuntimeDefault
//     is); Unconfined therefore gets more confinement than asked, never
//     less. No AppArmor is enabled in a sandbox (as containerd on a host
//     without AppArmor). A Localhost profile is refused.
//   - no_new_privs: the agent sets it for every process; false (the
//     kubelet's default, allowPrivilegeEscalation) gets the stricter true.
//   - masked and read-only paths: accepted when each path is in the
//     agent's fixed lists (the kubelet's defaults are the same paths);
//     any other path is refused.
//   - privileged, capabilities (add or drop), SELinux options,
//     supplemental groups, devices, sandbox sysctls: refused.
//   - container mounts: refused for now (see the README's list).
//   - container resources (CPU, memory limits of LinuxContainerConfig) are
//     not applied to the container. They size the sandbox instead, as
//     Kata's: hyperd's --vcpu/--memory plus the sum of the containers'
//     limits and the overhead that the kubelet gives in the sandbox config
//     (linux.resources, linux.overhead). Accepted, as the kubelet always
//     sends them, and listed in the README.
//   - cgroup_parent of the sandbox is recorded in its metadata; the
//     sandbox's processes are not moved into it.
//
// Methods not implemented answer codes.Unimplemented with the method's
// name (the embedded Unimplemented servers of cri-api).
//
// # Files
//
//   - server.go: Server, its Config, the interfaces it needs (Core, Images),
//     serving on a listener, Version and Status.
//   - meta.go: the CRI metadata kept in labels; ids and names.
//   - errors.go: core errors to gRPC status codes.
//   - sandbox.go: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//     PodSandboxStatus, ListPodSandbox.
//   - sandboxconfig.go: PodSandboxConfig to pod spec (hostname, DNS, ports,
//     namespace options).
//   - container.go: CreateContainer, StartContainer, StopContainer,
//     RemoveContainer, ListContainers, ContainerStatus.
//   - containerconfig.go: ContainerConfig to container spec (command, env,
//     working dir, tty, security context).
//   - exec.go: ExecSync with its timeout.
//   - logs.go: the CRI log files: followers, resume, reopen.
//   - images.go: the ImageService.
//   - stats.go: ContainerStats, ListContainerStats, PodSandboxStats,
//     ListPodSandboxStats (the core's per-container cgroup figures and the
//     pod's network counters); UpdateContainerResources (Unimplemented,
//     saying why).
//   - events.go: GetContainerEvents.
//   - liststream.go: the streamed lists (StreamPodSandboxes,
//     StreamContainers, StreamImages, StreamContainerStats,
//     StreamPodSandboxStats).
//   - streaming.go: Exec, Attach and PortForward through the streaming
//     server (k8s.io/cri-streaming, the kubelet's package): execs and
//     attaches with tty and resize, port connections through the agent.
//
// # Streaming
//
// Exec, Attach and PortForward return a URL of the streaming server that
// hyperd --cri-stream-address serves (default 127.0.0.1 and a free port,
// as containerd's; like the kubelet's it has no authentication of its own:
// a URL holds a one-time token). The server speaks SPDY and WebSocket and
// calls back: an exec is the core's exec (ExecCreate, ExecStart, resize,
// its exit code reported to the client), an attach the core's attach to
// the main process, a forwarded port a connection the agent dials inside
// the pod's network namespace (pod.Daemon.DialPod).
package cri
