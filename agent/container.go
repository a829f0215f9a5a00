package agent

// container.go owns a container in the guest: its record and state, its
// creation (root file system, cgroup, shim), the shim's messages, start,
// exec, signals, kill and cleanup. Its processes are process.go's.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

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
	dir    string // scratch: rw/{upper,work}, rootfs, lower, files
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

// create stages the pod files and starts the shim in a root prepared for
// it (startShim); the shim sets up the container's namespaces and the rest
// of its root and then waits for processes.
func (c *container) create() error {
	c.upper = filepath.Join(c.dir, "rw", "upper")
	c.rootfs = filepath.Join(c.dir, "rootfs")
	for _, d := range []string{c.upper, filepath.Join(c.dir, "rw", "work"), c.rootfs, filepath.Join(c.dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// block devices first: in a VM restored from a template they may not
	// have their size yet (disk.go)
	var devs []string
	if c.spec.RootfsType != "" {
		devs = append(devs, c.spec.Rootfs)
	}
	for _, m := range c.spec.Mounts {
		if m.FSType != "" {
			devs = append(devs, m.Source)
		}
	}
	if err := waitDisks(devs, time.Now().Add(diskWait)); err != nil {
		return err
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
	c.cgroup = c.s.makeCgroup(c.id)
	files, err := c.writeFiles()
	if err != nil {
		return err
	}
	// the shim has copied them into the container once it is ready
	defer os.RemoveAll(filepath.Join(c.dir, "files"))
	var staged *os.File
	if len(files) > 0 {
		if staged, err = c.openStaged(); err != nil {
			return err
		}
		defer staged.Close()
	}
	for k, v := range c.spec.Sysctl {
		// the pod's network namespace is the agent's: written here, as
		// a container root in a user namespace cannot
		if strings.HasPrefix(k, "net.") && allowedSysctl(k) {
			if err := os.WriteFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")), []byte(v), 0); err != nil {
				return fmt.Errorf("sysctl %s: %w", k, err)
			}
		}
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	pid, ch, err := c.startShim(lower, fds[1])
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
	cfg := &shimConfig{Hostname: hostname, Files: files,
		ReadOnlyFS: c.spec.ReadOnlyFS, Sysctl: c.spec.Sysctl, ResolvConf: c.s.resolvConf()}
	var sfd []int
	if staged != nil {
		sfd = []int{int(staged.Fd())}
	}
	if err := sendShim(c.shimFD, shimMsg{Op: "config", Config: cfg}, sfd...); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		<-ch
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

// startShim mounts the container's root and starts its shim there, on a
// locked thread that first moves to a mount namespace of its own: the
// mounts are the shim's (cloned from it) and never the agent's, and the
// thread ends with this call (the Go runtime retires a thread whose
// goroutine exits locked). The shim gets the thread's working directory,
// the root, and sock as fd 3.
func (c *container) startShim(lower string, sock int) (int, <-chan syscall.WaitStatus, error) {
	type result struct {
		pid int
		ch  <-chan syscall.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		pid, ch, err := c.startShimHere(lower, sock)
		done <- result{pid, ch, err}
	}()
	r := <-done
	return r.pid, r.ch, r.err
}

func (c *container) startShimHere(lower string, sock int) (int, <-chan syscall.WaitStatus, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return 0, nil, fmt.Errorf("mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return 0, nil, fmt.Errorf("make / private: %w", err)
	}
	us := c.s.userns
	rw := filepath.Dir(c.upper)
	if us != nil {
		// the layers through idmapped copies: the container's ids on
		// top, the image's own ids on disk
		for _, m := range []struct {
			src, at string
			ro      bool
		}{{lower, "idmap-lower", true}, {rw, "idmap-rw", false}} {
			at := filepath.Join(c.dir, m.at)
			if err := os.MkdirAll(at, 0o700); err != nil {
				return 0, nil, err
			}
			if err := bindIdmapped(us, c.dir, m.at, m.src, m.ro, false); err != nil {
				return 0, nil, err
			}
		}
		lower, rw = filepath.Join(c.dir, "idmap-lower"), filepath.Join(c.dir, "idmap-rw")
		// this thread's file system ids become the container root's
		// (host us.Host): overlayfs acts as its mounter, whose ids must
		// map through the idmapped layers (to the image's root), and
		// what is made here (mount points, /dev) is the container's
		if err := fsAs(us.Host); err != nil {
			return 0, nil, err
		}
	}
	// ReadOnlyFS is applied by the shim once mount points and files exist.
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(rw, "upper"), filepath.Join(rw, "work"))
	// nodev: a device node shipped in an image layer opens nothing (no
	// device cgroup here; see harden.go)
	if err := unix.Mount("overlay", c.rootfs, "overlay", unix.MS_NODEV, opts); err != nil {
		return 0, nil, fmt.Errorf("overlay: %w", err)
	}
	if err := prepareRoot(c.rootfs, c.spec.Mounts, us, c.dir); err != nil {
		return 0, nil, err
	}
	if err := unix.Chdir(c.rootfs); err != nil {
		return 0, nil, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	sys := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
	}
	self := c.s.cfg.Self
	if us != nil {
		sys.Cloneflags |= unix.CLONE_NEWUSER
		sys.UidMappings, sys.GidMappings = us.IDMap(), us.IDMap()
		sys.GidMappingsEnableSetgroups = true
		// the child starts with the agent's (unmapped) ids: it becomes
		// the namespace's root, host uid us.Host
		sys.Credential = &syscall.Credential{}
		// reached without walking the host's (root-only) directories
		self = "/proc/self/exe"
	}
	if c.cgroup != "" {
		if cgfd, err := os.Open(c.cgroup); err == nil {
			sys.UseCgroupFD = true
			sys.CgroupFD = int(cgfd.Fd())
			defer cgfd.Close()
		}
	}
	attr := &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), os.Stderr.Fd(), uintptr(sock)},
		Sys:   sys,
	}
	return c.s.reaper.start(self, []string{"hyper-agent", "init"}, attr)
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
	if c.lower != "" {
		unix.Unmount(c.lower, unix.MNT_DETACH)
	}
	if c.cgroup != "" {
		os.Remove(c.cgroup)
	}
	os.RemoveAll(c.dir)
}
