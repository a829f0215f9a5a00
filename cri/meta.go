// This file owns the CRI metadata kept in the core's labels (LabelSandbox,
// LabelContainer), the views the CRI builds from the core's info documents,
// and ids.

package cri

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The reserved labels: a pod with LabelSandbox is a CRI PodSandbox, a
// container with LabelContainer a CRI container. Their values are JSON
// (sandboxMeta, containerMeta).
const (
	LabelSandbox   = "io.hyperd.cri.sandbox"
	LabelContainer = "io.hyperd.cri.container"
)

// sandboxMeta is what the CRI knows of a sandbox beyond the core's pod.
type sandboxMeta struct {
	Name           string            `json:"name"`
	UID            string            `json:"uid"`
	Namespace      string            `json:"namespace"`
	Attempt        uint32            `json:"attempt"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	LogDirectory   string            `json:"logDirectory,omitempty"`
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	CgroupParent   string            `json:"cgroupParent,omitempty"`
	CreatedAt      int64             `json:"createdAt"` // unix ns
	// Namespace modes as the kubelet gave them (runtimeapi.NamespaceMode).
	NetworkMode int32 `json:"networkMode"`
	PidMode     int32 `json:"pidMode"`
	IpcMode     int32 `json:"ipcMode"`
}

// mountMeta is one CRI mount of a container.
type mountMeta struct {
	ContainerPath string `json:"containerPath"`
	HostPath      string `json:"hostPath"`
	Readonly      bool   `json:"readonly,omitempty"`
}

// containerMeta is what the CRI knows of a container beyond the core's.
type containerMeta struct {
	Name        string            `json:"name"`
	Attempt     uint32            `json:"attempt"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// LogPath is the host path of the CRI log file ("" when the kubelet
	// gave no log directory or path).
	LogPath   string      `json:"logPath,omitempty"`
	Image     string      `json:"image"` // ImageSpec.image as given
	UserImage string      `json:"userImage,omitempty"`
	CreatedAt int64       `json:"createdAt"` // unix ns
	Mounts    []mountMeta `json:"mounts,omitempty"`
	Stdin     bool        `json:"stdin,omitempty"`
	StdinOnce bool        `json:"stdinOnce,omitempty"`
	Tty       bool        `json:"tty,omitempty"`
}

// newID is a container id: 64 hex digits, like containerd's.
func newID() string { return randomHex(32) }

// newSandboxID is a sandbox (pod) id: 32 hex digits (128 bits). Not 64:
// the pod's directory holds the local driver's agent socket, and a unix
// socket path has 107 bytes (/var/lib/hyper/pods/<id>/sandbox/agent.sock).
func newSandboxID() string { return randomHex(16) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// checkLabels refuses the reserved keys in the kubelet's labels.
func checkLabels(what string, labels map[string]string) error {
	for k := range labels {
		if k == LabelSandbox || k == LabelContainer {
			return invalid("%s label %q is reserved by hyperd (it holds the CRI metadata)", what, k)
		}
	}
	return nil
}

// withMeta returns labels plus key=JSON(meta).
func withMeta(labels map[string]string, key string, meta any) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	b, _ := json.Marshal(meta)
	out[key] = string(b)
	return out
}

// userLabels is labels without the reserved keys.
func userLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		if k != LabelSandbox && k != LabelContainer {
			out[k] = v
		}
	}
	return out
}

// sandbox is the CRI's view of a pod that carries LabelSandbox.
type sandbox struct {
	info *pod.PodInfo
	meta sandboxMeta
}

// asSandbox decodes a pod's CRI metadata; ok is false for a pod that is
// not a CRI sandbox.
func asSandbox(pi *pod.PodInfo) (*sandbox, bool) {
	v, ok := pi.Spec.Labels[LabelSandbox]
	if !ok {
		return nil, false
	}
	sb := &sandbox{info: pi}
	if err := json.Unmarshal([]byte(v), &sb.meta); err != nil {
		return nil, false
	}
	return sb, true
}

func (sb *sandbox) id() string { return sb.info.PodID }

func (sb *sandbox) state() runtimeapi.PodSandboxState {
	if strings.EqualFold(sb.info.Status.Phase, "running") {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func (sb *sandbox) metadata() *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: sb.meta.Name, Uid: sb.meta.UID, Namespace: sb.meta.Namespace, Attempt: sb.meta.Attempt}
}

// container is the CRI's view of a core container that carries
// LabelContainer.
type container struct {
	info *pod.ContainerInfo
	meta containerMeta
}

func asContainer(ci *pod.ContainerInfo) (*container, bool) {
	v, ok := ci.Container.Labels[LabelContainer]
	if !ok {
		return nil, false
	}
	c := &container{info: ci}
	if err := json.Unmarshal([]byte(v), &c.meta); err != nil {
		return nil, false
	}
	return c, true
}

func (c *container) id() string { return c.info.Container.ContainerID }

// started: the container's process was started at least once.
func (c *container) started() bool {
	st := c.info.Status
	return st.Running.StartedAt != "" || st.Terminated.StartedAt != "" || st.Phase == pod.PhaseRunning
}

func (c *container) state() runtimeapi.ContainerState {
	st := c.info.Status
	switch {
	case st.Phase == pod.PhaseRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case st.Terminated.FinishedAt != "":
		return runtimeapi.ContainerState_CONTAINER_EXITED
	case c.started():
		return runtimeapi.ContainerState_CONTAINER_EXITED
	case st.Phase == pod.PhasePending:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func (c *container) metadata() *runtimeapi.ContainerMetadata {
	return &runtimeapi.ContainerMetadata{Name: c.meta.Name, Attempt: c.meta.Attempt}
}

// matches is a label selector match (every key=value present).
func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
