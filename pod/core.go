package pod

// core.go owns Core: the one Go interface over the daemon core.

import (
	"context"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// Core is the daemon core as its front ends see it. The REST server (package
// api) and the CRI server (package cri, to come) are siblings over it: both
// reach pods, containers, execs and the sandbox driver through these methods
// and nothing else, so there is one path to the daemon's state. *Daemon is
// the implementation; the image store is not part of it (api.ImageService
// is the REST server's view of that).
type Core interface {
	// Pods.
	CreatePod(spec *PodSpec) (string, error)
	StartPod(ctx context.Context, ref string) error
	StopPod(ctx context.Context, ref string) error
	StopPodKeepSandbox(ctx context.Context, ref string) error
	RemovePod(ctx context.Context, ref string) error
	PodInfo(ref string) (*PodInfo, error)
	Stats(ctx context.Context, ref string) (*PodStats, error)
	SetLabels(ref string, labels map[string]string, override bool) (string, error)
	KillPod(ctx context.Context, ref, container string, sig int) error
	Pause(ref string, pause bool) error
	PortMappings(ref string) ([]PortMapping, error)
	AddPortMappings(ref string, pms []PortMapping) error
	DeletePortMappings(ref string, pms []PortMapping) error

	// Containers.
	CreateContainer(podRef string, spec *ContainerSpec) (string, error)
	StartContainer(ctx context.Context, ref string) error
	StopContainer(ctx context.Context, ref string) error
	KillContainer(ctx context.Context, ref string, sig int) error
	RemoveContainer(ctx context.Context, ref string) error
	RenameContainer(oldName, newName string) (string, error)
	ContainerInfo(ref string) (*ContainerInfo, error)
	Logs(ctx context.Context, ref string, opt LogOptions, fn func(LogEntry) error) error
	Commit(ctx context.Context, ref string, opt CommitOptions) (string, error)

	// Execs.
	ExecCreate(ref string, cmd []string, tty bool) (string, error)
	ExecStart(ctx context.Context, ref, execID string) (sandbox.Stdio, bool, error)
	// ExitCode is a container's (execID "") or an exec's exit code.
	ExitCode(ctx context.Context, ref, execID string) (int, error)

	// Streams of a container (execID "") or an exec.
	ContainerTty(ref, execID string) (bool, error)
	Attach(ctx context.Context, ref, execID string, stdin bool) (st sandbox.Stdio, tty bool, release func(), err error)
	Resize(ctx context.Context, ref, execID string, w, h int) error

	// Lists: ids, filtered by pod and VM.
	ListPods(podFilter, vmFilter string) []string
	ListContainers(podFilter, vmFilter string) []string
	ListVMs(podFilter, vmFilter string) []string

	// System: the driver, counts, and what the image store and the builder
	// need from the pods.
	Counts() (pods, containers, running int)
	DriverName() string
	Isolation() string
	ImageInUse(id string) bool
	BuildRunner(o BuildRunOptions) BuildRunFunc
}

var _ Core = (*Daemon)(nil)
