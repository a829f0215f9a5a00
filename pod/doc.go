// Package pod is the daemon core of hyperd: the pod spec (podArgs) with the
// original hyperd's field names, defaults and validation; pods, containers
// and execs with hyperd's state machine; restart policies; host-side
// persistence of container logs (the daemon follows each container's log
// stream from the agent and keeps it on disk, so logs outlive the sandbox);
// labels; port mappings (hyperd listens on the host ports and forwards each
// connection or datagram through sandbox.Agent.Dial); and the bbolt state
// store under the data root, from which a restarted daemon gets every record
// back and reattaches running sandboxes (or marks their pods failed with the
// reason).
//
// Pods are driven only through the sandbox.Driver contract; images are
// reached through the narrow Images interface declared here.
//
// The files, each owning one concern:
//
//   - daemon.go: the Daemon type, Config and the per-pod, container and exec
//     state; New and Close; lookups (findPod, findCtr, findExec, withPod).
//   - phase.go: the pod state machine (podPhase, its transition table and
//     drawing) and setPhase, the only writer of a pod's State and Phase;
//     the State and container Phase constants.
//   - store.go: persistence: the records, the bbolt store, the save helpers.
//   - recover.go: restart recovery: restore, and the reattaches run in the
//     background, in parallel (reattach a sandbox, or fail its pod);
//     WaitReattached.
//   - reattaching.go: the placeholder sandbox of a pod being reattached
//     (its agent calls wait for the outcome).
//   - lifecycle.go: create, start, stop (keeping the sandbox or not),
//     remove, kill and pause of pods.
//   - sandboxes.go: the pods' sandboxes: watching, idling (stopVM=no),
//     stopping, releasing what ran in them, failing a pod that lost one.
//   - exits.go: a container's run: add and start, log following, exit,
//     restart policy, and finishing the pod when nothing runs any more.
//   - volumes.go: volumes and files, and the agent's container spec.
//   - images.go: the Images interface and resolving a container's image.
//   - containers.go: container and exec operations (create, start, stop,
//     kill, remove, rename, logs, exit codes, attach, resize, exec, commit).
//   - ports.go: port mappings: the host-side forwarder and the pod's rules.
//   - labels.go: pod labels.
//   - list.go: /list of pods, containers and VMs, and the counts for /info.
//   - info.go: the pod and container info documents and pod stats.
//   - logs.go: container logs on the host (file format, follow, read).
//   - build.go: running Dockerfile build steps in throwaway pods.
//   - spec.go: the pod spec: types, decoding, defaults, validation.
//   - errors.go: the error types the API maps to HTTP statuses.
package pod
