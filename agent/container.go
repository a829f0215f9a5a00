package agent

// container.go owns a container in the guest: its record and state, its
// creation (root file system, cgroup, shim), the shim's messages, start,
// exec, signals, kill and cleanup. Its processes are process.go's.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

type ctrState int

const (
	stateCreated ctrState = iota
	stateRunning
	stateStopped
)

type container struct {
	s      *Server
	id     string
	spec   protocol.ContainerSpec
	dir    string // scratch: upper, work, rootfs, lower
	upper  string
	rootfs string
	lower  string // mount point of a block-device lower, "" for a directory
	cgroup string

	mu      sync.Mutex
	state   ctrState
	shimPid int
	shimFD  int
	shimW   sync.Mutex
	shimEnd chan struct{}
	procs   map[string]*process
	pending map[string]chan shimMsg // started/error replies by id
}

func (s *Server) add(spec protocol.ContainerSpec) *protocol.Error {
	if !validID(spec.ID) {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid container id %q", spec.ID)
	}
	if len(spec.Process.Args) == 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "container %s has no command", spec.ID)
	}
	if spec.Rootfs == "" {
		return protocol.Errorf(protocol.CodeBadRequest, "container %s has no rootfs", spec.ID)
	}
	s.mu.Lock()
	if _, dup := s.ctrs[spec.ID]; dup {
		s.mu.Unlock()
		return protocol.Errorf(protocol.CodeConflict, "container %s exists", spec.ID)
	}
	c := &container{s: s, id: spec.ID, spec: spec, dir: s.statePath("c", spec.ID), procs: map[string]*process{}, pending: map[string]chan shimMsg{}, shimFD: -1}
	s.ctrs[spec.ID] = c
	s.mu.Unlock()
	if err := c.create(); err != nil {
		s.mu.Lock()
		delete(s.ctrs, spec.ID)
		s.mu.Unlock()
		c.cleanup()
		return protocol.Errorf(protocol.CodeInternal, "create container %s: %v", spec.ID, err)
	}
	main, err := c.newProcess("", spec.Process)
	if err != nil {
		s.remove(spec.ID)
		return protocol.Errorf(protocol.CodeInternal, "create container %s: %v", spec.ID, err)
	}
	c.mu.Lock()
	c.procs[""] = main
	c.mu.Unlock()
	return nil
}

// create mounts the rootfs and starts the shim, which sets up the
// container's namespaces and root and then waits for processes.
func (c *container) create() error {
	c.upper = filepath.Join(c.dir, "upper")
	work := filepath.Join(c.dir, "work")
	c.rootfs = filepath.Join(c.dir, "rootfs")
	for _, d := range []string{c.upper, work, c.rootfs, filepath.Join(c.dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lower := c.spec.Rootfs
	if c.spec.RootfsType != "" {
		c.lower = filepath.Join(c.dir, "lower")
		if err := os.MkdirAll(c.lower, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(c.spec.Rootfs, c.lower, c.spec.RootfsType, unix.MS_RDONLY, ""); err != nil {
			c.lower = ""
			return fmt.Errorf("mount %s (%s): %w", c.spec.Rootfs, c.spec.RootfsType, err)
		}
		lower = c.lower
	} else if st, err := os.Stat(lower); err != nil || !st.IsDir() {
		return fmt.Errorf("rootfs %s is not a directory", lower)
	}
	// ReadOnlyFS is applied by the shim once mount points and files exist.
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, c.upper, work)
	// nodev: a device node shipped in an image layer opens nothing (no
	// device cgroup here; see harden.go)
	if err := unix.Mount("overlay", c.rootfs, "overlay", unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	c.cgroup = c.s.makeCgroup(c.id)

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	devnull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return err
	}
	defer devnull.Close()
	sys := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
	}
	var cgfd *os.File
	if c.cgroup != "" {
		if cgfd, err = os.Open(c.cgroup); err == nil {
			sys.UseCgroupFD = true
			sys.CgroupFD = int(cgfd.Fd())
			defer cgfd.Close()
		}
	}
	stderr := os.Stderr.Fd()
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), stderr, uintptr(fds[1])},
		Sys:   sys,
	}
	pid, ch, err := c.s.reaper.start(c.s.cfg.Self, []string{"hyper-agent", "init"}, attr)
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return fmt.Errorf("start shim: %w", err)
	}
	c.shimPid, c.shimFD = pid, fds[0]
	c.shimEnd = make(chan struct{})
	hostname := c.spec.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	files, err := c.writeFiles()
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		<-ch
		return err
	}
	// the shim has copied them into the container once it is ready
	defer os.RemoveAll(filepath.Join(c.dir, "files"))
	cfg := &shimConfig{Rootfs: c.rootfs, Hostname: hostname, Mounts: c.spec.Mounts, Files: files,
		ReadOnlyFS: c.spec.ReadOnlyFS, Sysctl: c.spec.Sysctl, ResolvConf: c.s.resolvConf()}
	if err := sendShim(c.shimFD, shimMsg{Op: "config", Config: cfg}); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return err
	}
	m, _, err := recvShim(c.shimFD)
	if err != nil || m.Op != "ready" {
		unix.Kill(pid, unix.SIGKILL)
		<-ch
		if err == nil {
			err = errors.New(m.Err)
		}
		return fmt.Errorf("container setup: %w", err)
	}
	go c.shimLoop(ch)
	return nil
}

// shimLoop reads the shim's reports until it exits.
func (c *container) shimLoop(exited <-chan syscall.WaitStatus) {
	msgs := make(chan shimMsg)
	go func() {
		defer close(msgs)
		for {
			m, fds, err := recvShim(c.shimFD)
			if err != nil {
				return
			}
			if m.Op == "started" {
				m.fds = fds // the pty master of a tty process
			} else {
				closeFDs(fds)
			}
			msgs <- m
		}
	}()
	var shimStatus *syscall.WaitStatus
	for msgs != nil || shimStatus == nil {
		select {
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			c.onShim(m)
		case ws := <-exited:
			shimStatus = &ws
			exited = nil
		}
	}
	code, sig := exitCode(*shimStatus)
	c.mu.Lock()
	c.state = stateStopped
	procs := make([]*process, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	for id, ch := range c.pending {
		ch <- shimMsg{Op: "error", Err: "container exited"}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	c.shimW.Lock() // no sender may use the fd number after it is closed
	unix.Close(c.shimFD)
	c.shimFD = -1
	c.shimW.Unlock()
	close(c.shimEnd)
	for _, p := range procs {
		if p.id == "" {
			p.exit(code, sig)
		} else {
			p.exit(137, 9)
		}
	}
}

func (c *container) onShim(m shimMsg) {
	switch m.Op {
	case "started", "error":
		c.mu.Lock()
		ch, ok := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ok {
			ch <- m
		} else {
			closeFDs(m.fds)
		}
	case "exit":
		c.mu.Lock()
		p := c.procs[m.ID]
		c.mu.Unlock()
		if p != nil {
			p.exit(m.Code, m.Signal)
		}
	}
}

func (c *container) start() *protocol.Error {
	c.mu.Lock()
	if c.state != stateCreated {
		c.mu.Unlock()
		return protocol.Errorf(protocol.CodeConflict, "container %s was already started", c.id)
	}
	c.state = stateRunning
	c.mu.Unlock()
	perr := c.launch("", c.spec.Process)
	if perr != nil {
		// a failed start can be retried: attachers of the failed attempt
		// saw it end (exit 127); a fresh main process takes its place
		fresh, err := c.newProcess("", c.spec.Process)
		c.mu.Lock()
		if c.state == stateRunning {
			c.state = stateCreated
		}
		if err == nil {
			c.procs[""] = fresh
		}
		c.mu.Unlock()
	}
	return perr
}

func (c *container) exec(id string, p protocol.Process) *protocol.Error {
	if !validID(id) {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid exec id %q", id)
	}
	if len(p.Args) == 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "exec without command")
	}
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st != stateRunning {
		return protocol.Errorf(protocol.CodeConflict, "container %s is not running", c.id)
	}
	return c.launch(id, p)
}

func (c *container) proc(id string) (*process, *protocol.Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[id]
	if !ok {
		if id == "" {
			return nil, protocol.Errorf(protocol.CodeConflict, "container %s was not started", c.id)
		}
		return nil, protocol.Errorf(protocol.CodeNotFound, "no such exec: %s", id)
	}
	return p, nil
}

func (c *container) signal(id string, sig int) *protocol.Error {
	if sig <= 0 || sig > 64 {
		return protocol.Errorf(protocol.CodeBadRequest, "bad signal %d", sig)
	}
	if _, perr := c.proc(id); perr != nil {
		return perr
	}
	c.mu.Lock()
	st, pid := c.state, c.shimPid
	c.mu.Unlock()
	if st != stateRunning {
		return protocol.Errorf(protocol.CodeConflict, "container %s is not running", c.id)
	}
	if id == "" && sig == int(unix.SIGKILL) {
		// killing the pid namespace's init kills everything in it
		unix.Kill(pid, unix.SIGKILL)
		return nil
	}
	c.shimW.Lock()
	err := errors.New("container exited")
	if c.shimFD >= 0 {
		err = sendShim(c.shimFD, shimMsg{Op: "signal", ID: id, Sig: sig})
	}
	c.shimW.Unlock()
	if err != nil {
		return protocol.Errorf(protocol.CodeConflict, "container %s: %v", c.id, err)
	}
	return nil
}

// kill stops the shim (and with it the container) and waits for it.
func (c *container) kill() {
	c.mu.Lock()
	pid, end := c.shimPid, c.shimEnd
	c.mu.Unlock()
	if end == nil {
		return
	}
	unix.Kill(pid, unix.SIGKILL)
	<-end
}

func (c *container) cleanup() {
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*process{}
	c.mu.Unlock()
	for _, p := range procs {
		p.exit(137, 9)
		<-p.done
		p.out.remove()
	}
	if c.rootfs != "" {
		unix.Unmount(c.rootfs, unix.MNT_DETACH)
	}
	if c.lower != "" {
		unix.Unmount(c.lower, unix.MNT_DETACH)
	}
	if c.cgroup != "" {
		os.Remove(c.cgroup)
	}
	os.RemoveAll(c.dir)
}
