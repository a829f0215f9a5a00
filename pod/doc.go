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
package pod
