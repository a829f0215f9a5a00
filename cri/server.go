// This file owns the Server: its Config, the core and image interfaces it
// is built on, serving gRPC on a listener, Version and Status.

package cri

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/hyperhq/hyperd-go/pod"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
)

// Core is the daemon core as the CRI server uses it: the REST API's
// pod.Core and the few operations only the CRI needs (pod/sandboxpods.go).
// *pod.Daemon implements it.
type Core interface {
	pod.Core
	SignalExec(ctx context.Context, ref, execID string, sig int) error
	PrepareContainer(ctx context.Context, ref string) error
	DialPod(ctx context.Context, ref string, port int) (net.Conn, error)
	AddVolumes(podRef string, vols []pod.VolumeSpec) error
	RemoveVolumes(podRef string, names []string) error
}

var _ Core = (*pod.Daemon)(nil)

// RuntimeName is the runtime_name of Version.
const RuntimeName = "hyperd"

// Config configures a Server.
type Config struct {
	Core   Core
	Images Images // nil: the image service answers Unimplemented, containers cannot be created
	Log    *slog.Logger
	// Version is hyperd's version (runtime_version).
	Version string
	// Networking: pods get a CNI network (NetworkReady); without it they
	// have loopback only and Status says so.
	Networking bool
	// BaseVCPU and BaseMemoryMiB are hyperd's sandbox size (--vcpu,
	// --memory), to which a sandbox sized by the kubelet (its containers'
	// limits) adds them (sandboxconfig.go).
	BaseVCPU, BaseMemoryMiB int
	// NotReady, when set, is why the runtime cannot run CRI pods with
	// this hyperd's sandbox driver: Status reports RuntimeReady false with
	// it (a kubelet then schedules nothing here), and the calls still
	// answer.
	NotReady string
}

// Server is the CRI v1 RuntimeService and ImageService.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg    Config
	core   Core
	img    Images
	log    *slog.Logger
	logs   *logWriters
	cpu    cpuSamples
	events events
	// ctx ends with Close (the exit watchers of events.go)
	ctx    context.Context
	cancel context.CancelFunc

	// mu serializes the name checks and creations (a sandbox or container
	// name is unique among the CRI's; the core checks only its own names),
	// and guards stream.
	mu     sync.Mutex
	stream streaming.Server // nil until ServeStreaming
}

// New returns a Server and resumes the log followers of CRI containers
// whose output may not all be in their CRI log file yet, and the exit
// watchers of the running ones.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{cfg: cfg, core: cfg.Core, img: cfg.Images, log: cfg.Log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.logs = newLogWriters(cfg.Core, cfg.Log)
	s.resumeLogs()
	s.resumeWatches()
	return s
}

// GRPCServer returns a gRPC server with both services registered.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
	return g
}

// Close stops the log followers (their files stay; a next hyperd resumes)
// and the event streams.
func (s *Server) Close() {
	s.cancel()
	s.logs.closeAll()
}

// Version answers the CRI's version handshake.
func (s *Server) Version(ctx context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: RuntimeName, RuntimeVersion: s.cfg.Version, RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady (the core and its sandbox driver are up) and
// NetworkReady (pods get a CNI network).
func (s *Server) Status(ctx context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	rt := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if s.img == nil {
		rt.Status, rt.Reason, rt.Message = false, "NoImageStore", "this hyperd has no image store: containers cannot be created"
	}
	if s.cfg.NotReady != "" {
		rt.Status, rt.Reason, rt.Message = false, "SandboxDriverNotReady", s.cfg.NotReady
	}
	nw := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: s.cfg.Networking}
	if !s.cfg.Networking {
		nw.Reason, nw.Message = "NetworkDisabled", "hyperd runs with --network none: pods have loopback only"
	}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{rt, nw}}}
	if r.Verbose {
		resp.Info = map[string]string{"driver": s.core.DriverName(), "isolation": s.core.Isolation()}
	}
	return resp, nil
}
