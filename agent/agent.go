// This file owns the agent server: its configuration, serving connections,
// the control connection's requests and their dispatch, pod setup, stats and
// container lookup. Stream connections are streams.go's, containers
// container.go's.

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/internal/userns"
	"golang.org/x/sys/unix"
)

// AgentVersion is reported by OpVersion.
const AgentVersion = "hyper-agent/0.1"

// Transport produces the listener the agent serves on (vsock in a VM, a
// unix socket in local mode, a serial-port harness in tests).
type Transport interface {
	Listen() (net.Listener, error)
}

// UnixTransport listens on a unix socket path.
type UnixTransport struct{ Path string }

// Listen implements Transport.
func (u UnixTransport) Listen() (net.Listener, error) {
	os.Remove(u.Path)
	ln, err := net.Listen("unix", u.Path)
	if err != nil {
		return nil, err
	}
	// the path may belong to a successor by the time we close: the caller
	// removes it only if it is still ours
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}

// Config of an agent.
type Config struct {
	// StateDir holds container scratch dirs and logs.
	StateDir string
	// CgroupRoot is the cgroup v2 directory containers are placed under;
	// "" or not writable = no cgroups.
	CgroupRoot string
	// Limits bound every container of the pod together (the local
	// driver's pod resource); zero values mean no limit. Any limit needs
	// a writable cgroup2 CgroupRoot.
	Limits Limits
	// UserNS, when set, puts containers in a user namespace with that
	// mapping (userns.go; the local driver's). NewServer fails when the
	// kernel or the state directory's file system cannot do it.
	UserNS *userns.Map
	// Self is the agent binary re-executed as "init" for container shims.
	Self string
	// PowerOff is called by OpShutdown after the reply went out.
	PowerOff func()
	Log      *log.Logger
}

// Server is the agent.
type Server struct {
	cfg    Config
	reaper *reaper
	mu     sync.Mutex
	ctrs   map[string]*container
	setup  protocol.PodSetup
	id     identity // clock and RNG setup (identity.go)
	cgroup bool
	ln     net.Listener
	quit   chan struct{}
	qonce  sync.Once
	staged map[string]int64 // staged file sizes by name (stage.go), under mu
	userns *userns.NS       // containers' user namespace, nil for none
}

// NewServer prepares an agent.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = log.New(os.Stderr, "hyper-agent: ", log.LstdFlags)
	}
	if cfg.Self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Self = exe
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, reaper: newReaper(), ctrs: map[string]*container{}, quit: make(chan struct{})}
	s.cgroup = setupCgroupRoot(cfg.CgroupRoot)
	if cfg.Limits != (Limits{}) {
		if !s.cgroup {
			return nil, fmt.Errorf("resource limits need a writable cgroup2 hierarchy at %q", cfg.CgroupRoot)
		}
		if err := applyLimits(cfg.CgroupRoot, cfg.Limits); err != nil {
			return nil, err
		}
	}
	if cfg.UserNS != nil {
		var err error
		if s.userns, err = newUserns(*cfg.UserNS, cfg.StateDir); err != nil {
			return nil, err
		}
		if err := setPodNetSysctls(); err != nil {
			return nil, err
		}
	}
	s.reaper.run()
	return s, nil
}

// Serve accepts connections until Shutdown or a listener error.
func (s *Server) Serve(ln net.Listener) error {
	s.ln = ln
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.handleConn(c)
	}
}

// Shutdown removes every container and stops Serve, as OpShutdown does.
func (s *Server) Shutdown() {
	s.dispatch(protocol.Request{Op: protocol.OpShutdown})
	s.finish()
}

// Done is closed when the agent was shut down.
func (s *Server) Done() <-chan struct{} { return s.quit }

func (s *Server) handleConn(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := protocol.ReadFrame(c)
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	h, err := protocol.DecodeHello(b)
	if err != nil {
		protocol.WriteJSON(c, protocol.HelloReply{Version: protocol.Version, Error: protocol.Errorf(protocol.CodeVersion, "%v", err)})
		c.Close()
		return
	}
	if h.Kind == protocol.KindControl {
		if protocol.WriteJSON(c, protocol.HelloReply{Version: protocol.Version, Agent: AgentVersion}) != nil {
			c.Close()
			return
		}
		s.control(c)
		return
	}
	s.stream(c, h)
}

func (s *Server) control(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	for {
		b, err := protocol.ReadFrame(c)
		if err != nil {
			return
		}
		req, err := protocol.DecodeRequest(b)
		if err != nil {
			wmu.Lock()
			protocol.WriteJSON(c, protocol.Response{Error: protocol.Errorf(protocol.CodeBadRequest, "%v", err)})
			wmu.Unlock()
			continue
		}
		handle := func() {
			res, perr := s.dispatch(req)
			resp := protocol.Response{ID: req.ID, Error: perr}
			if perr == nil && res != nil {
				rb, err := json.Marshal(res)
				if err != nil {
					resp.Error = protocol.Errorf(protocol.CodeInternal, "%v", err)
				} else {
					resp.Result = rb
				}
			}
			wmu.Lock()
			protocol.WriteJSON(c, resp)
			wmu.Unlock()
			if req.Op == protocol.OpShutdown && perr == nil {
				s.finish()
			}
		}
		// cheap, non-blocking ops are answered inline; the rest (wait
		// blocks, add mounts) concurrently
		if req.Op == protocol.OpPing || req.Op == protocol.OpVersion {
			handle()
		} else {
			go handle()
		}
	}
}

func decode[T any](b json.RawMessage) (T, *protocol.Error) {
	var v T
	if len(b) == 0 {
		return v, protocol.Errorf(protocol.CodeBadRequest, "missing body")
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, protocol.Errorf(protocol.CodeBadRequest, "bad body: %v", err)
	}
	return v, nil
}

// withBody decodes a request body T for f, which has an empty result.
func withBody[T any](body json.RawMessage, f func(T) *protocol.Error) (any, *protocol.Error) {
	v, perr := decode[T](body)
	if perr != nil {
		return nil, perr
	}
	return struct{}{}, f(v)
}

// onContainer decodes a request body T that names a container (and maybe
// an exec) in ContainerRef's fields, and runs f on that container.
func onContainer[T any](s *Server, body json.RawMessage, f func(*container, protocol.ContainerRef, T) (any, *protocol.Error)) (any, *protocol.Error) {
	v, perr := decode[T](body)
	if perr != nil {
		return nil, perr
	}
	ref, perr := decode[protocol.ContainerRef](body)
	if perr != nil {
		return nil, perr
	}
	c, perr := s.get(ref.Container)
	if perr != nil {
		return nil, perr
	}
	return f(c, ref, v)
}

// onProcess is onContainer for the process the body names (exec "" is
// the container's main process).
func onProcess[T any](s *Server, body json.RawMessage, f func(*process, T) (any, *protocol.Error)) (any, *protocol.Error) {
	return onContainer(s, body, func(c *container, ref protocol.ContainerRef, v T) (any, *protocol.Error) {
		p, perr := c.proc(ref.Exec)
		if perr != nil {
			return nil, perr
		}
		return f(p, v)
	})
}

func (s *Server) dispatch(req protocol.Request) (any, *protocol.Error) {
	switch req.Op {
	case protocol.OpVersion:
		return protocol.VersionReply{Protocol: protocol.Version, Agent: AgentVersion}, nil
	case protocol.OpPing:
		return struct{}{}, nil
	case protocol.OpSetupPod:
		return withBody(req.Body, s.podSetup)
	case protocol.OpStage:
		return withBody(req.Body, s.stage)
	case protocol.OpAdd:
		return withBody(req.Body, s.add)
	case protocol.OpStart:
		return onContainer(s, req.Body, func(c *container, _, _ protocol.ContainerRef) (any, *protocol.Error) {
			return struct{}{}, c.start()
		})
	case protocol.OpExec:
		return onContainer(s, req.Body, func(c *container, _ protocol.ContainerRef, r protocol.ExecRequest) (any, *protocol.Error) {
			return struct{}{}, c.exec(r.Exec, r.Process)
		})
	case protocol.OpSignal:
		return onContainer(s, req.Body, func(c *container, _ protocol.ContainerRef, r protocol.SignalRequest) (any, *protocol.Error) {
			return struct{}{}, c.signal(r.Exec, r.Signal)
		})
	case protocol.OpWait:
		return onProcess(s, req.Body, func(p *process, _ protocol.ContainerRef) (any, *protocol.Error) {
			return p.wait(), nil
		})
	case protocol.OpResize:
		return onProcess(s, req.Body, func(p *process, r protocol.ResizeRequest) (any, *protocol.Error) {
			return struct{}{}, p.resize(r.Width, r.Height)
		})
	case protocol.OpStats:
		return s.stats(), nil
	case protocol.OpRemove:
		return withBody(req.Body, func(r protocol.ContainerRef) *protocol.Error { return s.remove(r.Container) })
	case protocol.OpShutdown:
		s.mu.Lock()
		ids := make([]string, 0, len(s.ctrs))
		for id := range s.ctrs {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			s.remove(id)
		}
		return struct{}{}, nil
	}
	return nil, protocol.Errorf(protocol.CodeBadRequest, "unknown op %q", req.Op)
}

func (s *Server) finish() {
	s.qonce.Do(func() {
		close(s.quit)
		if s.ln != nil {
			s.ln.Close()
		}
		if s.cfg.PowerOff != nil {
			go s.cfg.PowerOff()
		}
	})
}

func (s *Server) podSetup(p protocol.PodSetup) *protocol.Error {
	for _, d := range append(append(append([]string(nil), p.DNS...), p.DNSSearch...), p.DNSOptions...) {
		if strings.ContainsAny(d, " \t\r\n") || d == "" {
			return protocol.Errorf(protocol.CodeBadRequest, "bad dns entry %q", d)
		}
	}
	if len(p.Hostname) > 64 {
		return protocol.Errorf(protocol.CodeBadRequest, "hostname too long")
	}
	if perr := validateIdentity(p, s.ownsMachine()); perr != nil {
		return perr
	}
	// the clock first: everything after it (container start times, log
	// records) is stamped with the host's time
	if perr := s.setIdentity(p); perr != nil {
		return perr
	}
	if p.Hostname != "" {
		if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "sethostname: %v", err)
		}
	}
	if len(p.Interfaces) > 0 || len(p.Routes) > 0 {
		if perr := setupNetwork(p.Interfaces, p.Routes); perr != nil {
			return perr
		}
	}
	s.mu.Lock()
	s.setup = p
	s.mu.Unlock()
	return nil
}

func (s *Server) resolvConf() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, d := range s.setup.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if len(s.setup.DNSSearch) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s.setup.DNSSearch, " "))
	}
	if len(s.setup.DNSOptions) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(s.setup.DNSOptions, " "))
	}
	return []byte(b.String())
}

func (s *Server) get(id string) (*container, *protocol.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.ctrs[id]
	if !ok {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no such container: %s", id)
	}
	return c, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (s *Server) stats() protocol.PodStats {
	st := protocol.PodStats{Time: time.Now(), CPUCount: runtime.NumCPU(), MemTotal: memTotal(), MemAvailable: memAvailable("/proc/meminfo")}
	s.mu.Lock()
	cs := make([]*container, 0, len(s.ctrs))
	for _, c := range s.ctrs {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		cst := protocol.ContainerStats{ID: c.id}
		if c.cgroup != "" {
			readCgroupStats(c.cgroup, &cst)
		} else {
			c.mu.Lock()
			pid, end := c.shimPid, c.shimEnd
			c.mu.Unlock()
			alive := end != nil
			if alive {
				select {
				case <-end: // exited: its pid may belong to someone else now
					alive = false
				default:
				}
			}
			if !alive {
				pid = 0
			}
			readProcTreeStats("/proc", pid, &cst)
		}
		st.Containers = append(st.Containers, cst)
	}
	return st
}

func (s *Server) remove(id string) *protocol.Error {
	c, perr := s.get(id)
	if perr != nil {
		return perr
	}
	c.kill()
	s.mu.Lock()
	delete(s.ctrs, id)
	s.mu.Unlock()
	c.cleanup()
	return nil
}
