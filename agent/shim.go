package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// shimFD is the agent socket inherited by "hyper-agent init".
const shimFD = 3

// RunInit is the container shim ("hyper-agent init"): it runs as PID 1 of
// the container's new pid/mount/uts/ipc (and, with the local driver's
// user namespace, user) namespaces, in the root the agent prepared (its
// working directory), finishes it (mounts, pivot_root), then starts the main process and execs on the
// agent's request and reports their exits. It returns only on error; when
// the main process exits it exits, which kills the whole pid namespace.
func RunInit() error {
	runtime.LockOSThread()
	// the name ps shows for the container's PID 1 (started as
	// /proc/self/exe in a user namespace, it would be "exe")
	os.WriteFile("/proc/self/comm", []byte("hyper-agent"), 0)
	// the agent socket must not leak into container processes
	unix.CloseOnExec(shimFD)
	m, fds, err := recvShim(shimFD)
	if err != nil {
		return err
	}
	if m.Op != "config" || m.Config == nil || len(fds) > 1 {
		closeFDs(fds)
		return fmt.Errorf("shim: expected config, got %q", m.Op)
	}
	staged := -1 // the staged pod files' directory, sent with the config
	if len(fds) == 1 {
		staged = fds[0]
	}
	err = setupRoot(m.Config, staged)
	closeFDs(fds)
	if err != nil {
		sendShim(shimFD, shimMsg{Op: "error", Err: err.Error()})
		return err
	}
	if err := dropBoundingCaps(); err != nil {
		sendShim(shimFD, shimMsg{Op: "error", Err: err.Error()})
		return err
	}
	if err := noNewPrivs(); err != nil {
		sendShim(shimFD, shimMsg{Op: "error", Err: err.Error()})
		return err
	}
	// on the shim's every thread, inherited by every container process
	if err := containerSeccomp().Install(); err != nil {
		sendShim(shimFD, shimMsg{Op: "error", Err: err.Error()})
		return err
	}
	s := &shim{r: newReaper(), ids: map[int]string{}, pids: map[string]int{}}
	if err := sendShim(shimFD, shimMsg{Op: "ready"}); err != nil {
		return err
	}
	s.r.run()
	for {
		m, fds, err := recvShim(shimFD)
		if err != nil {
			// the agent is gone: take the container down with us
			os.Exit(137)
		}
		switch m.Op {
		case "exec":
			s.exec(m, fds)
		case "signal":
			s.mu.Lock()
			pid, ok := s.pids[m.ID]
			s.mu.Unlock()
			if ok && m.Sig > 0 && m.Sig < 65 {
				unix.Kill(pid, unix.Signal(m.Sig))
			}
		}
		for _, f := range fds {
			unix.Close(f)
		}
	}
}

type shim struct {
	r    *reaper
	mu   sync.Mutex
	ids  map[int]string
	pids map[string]int
	wmu  sync.Mutex
}

func (s *shim) send(m shimMsg, fds ...int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	sendShim(shimFD, m, fds...)
}

// stdioFDs is how many descriptors the agent attaches to an exec: stdin,
// stdout and stderr, or none for a tty (the shim allocates the pty).
func stdioFDs(tty bool) int {
	if tty {
		return 0
	}
	return 3
}

// openContainerPty allocates a pseudo-terminal from the devpts instance
// at /dev/pts of the shim's (the container's) root, as runc does: the
// slave, owned by uid, has the size w x h. The slave is opened from the
// master (TIOCGPTPEER), not by a path a container process could replace.
// Without a size (w or h 0) it is 80x24.
func openContainerPty(uid, w, h int) (ptm, pts int, err error) {
	ptm, err = unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("open the container's /dev/pts/ptmx: %w", err)
	}
	fail := func(what string, err error) (int, int, error) {
		unix.Close(ptm)
		return -1, -1, fmt.Errorf("pty: %s: %w", what, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(ptm, &st); err != nil {
		return fail("stat ptmx", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 {
		return fail("/dev/pts/ptmx", errors.New("not the ptmx device"))
	}
	if err := unix.IoctlSetPointerInt(ptm, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlock", err)
	}
	if w <= 0 || h <= 0 || w > 65535 || h > 65535 {
		// no size from the client (not a terminal, curl): a terminal's
		// usual one rather than 0x0, which stty size and full-screen
		// programs take for "no size"
		w, h = 80, 24
	}
	if err := unix.IoctlSetWinsize(ptm, unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(w), Row: uint16(h)}); err != nil {
		return fail("set size", err)
	}
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(ptm), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	pts, err = int(r), nil
	if errno != 0 {
		err = errno
	}
	if err == unix.EINVAL || err == unix.ENOTTY {
		// kernels before 4.13: open the slave by its number
		var n uint32
		if n, err = unix.IoctlGetUint32(ptm, unix.TIOCGPTN); err == nil {
			pts, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return fail("open slave", err)
	}
	if err := unix.Fchown(pts, uid, -1); err != nil {
		unix.Close(pts)
		return fail("chown slave", err)
	}
	return ptm, pts, nil
}

func (s *shim) exec(m shimMsg, fds []int) {
	fail := func(err error) { s.send(shimMsg{Op: "error", ID: m.ID, Err: err.Error()}) }
	if m.Proc == nil || len(m.Proc.Args) == 0 {
		fail(fmt.Errorf("no command"))
		return
	}
	p := m.Proc
	if want := stdioFDs(p.Tty); len(fds) != want {
		fail(fmt.Errorf("expected %d stdio fds, got %d", want, len(fds)))
		return
	}
	cred, home, err := resolveUser(p.User)
	if err != nil {
		fail(err)
		return
	}
	// a tty comes from the container's own devpts instance (mounted
	// newinstance by setupRoot), so its name resolves inside the container:
	// tty, ps and ttyname work. The master goes back to the agent.
	ptm := -1
	if p.Tty {
		var pts int
		ptm, pts, err = openContainerPty(int(cred.Uid), p.Width, p.Height)
		if err != nil {
			fail(err)
			return
		}
		defer unix.Close(ptm)
		defer unix.Close(pts)
		fds = []int{pts, pts, pts}
	}
	env := append([]string(nil), p.Env...)
	if envGet(env, "PATH") == "" {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if envGet(env, "HOME") == "" {
		env = append(env, "HOME="+home)
	}
	if p.Tty && envGet(env, "TERM") == "" {
		env = append(env, "TERM=xterm")
	}
	if h, err := os.Hostname(); err == nil && envGet(env, "HOSTNAME") == "" {
		env = append(env, "HOSTNAME="+h)
	}
	path, err := lookPath(p.Args[0], envGet(env, "PATH"))
	if err != nil {
		fail(err)
		return
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	sys := &syscall.SysProcAttr{Setsid: true, Credential: cred}
	if p.Tty {
		sys.Setctty = true
		sys.Ctty = 0
	}
	attr := &syscall.ProcAttr{Dir: cwd, Env: env, Files: []uintptr{uintptr(fds[0]), uintptr(fds[1]), uintptr(fds[2])}, Sys: sys}
	// hold the reaper while registering so a fast exit is not lost
	s.mu.Lock()
	pid, ch, err := s.r.start(path, p.Args, attr)
	if err != nil {
		s.mu.Unlock()
		fail(fmt.Errorf("exec %s: %w", p.Args[0], err))
		return
	}
	s.ids[pid] = m.ID
	s.pids[m.ID] = pid
	s.mu.Unlock()
	if ptm >= 0 {
		s.send(shimMsg{Op: "started", ID: m.ID, Pid: pid}, ptm)
	} else {
		s.send(shimMsg{Op: "started", ID: m.ID, Pid: pid})
	}
	go func() {
		ws := <-ch
		code, sig := exitCode(ws)
		s.mu.Lock()
		delete(s.ids, pid)
		delete(s.pids, m.ID)
		s.mu.Unlock()
		s.send(shimMsg{Op: "exit", ID: m.ID, Code: code, Signal: sig})
		if m.ID == "" {
			os.Exit(0)
		}
	}()
}

func envGet(env []string, k string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], k+"="); ok {
			return v
		}
	}
	return ""
}

func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in $PATH", name)
}

// resolveUser resolves Docker's user forms (name, uid, uid:gid, name:group)
// against the container's /etc/passwd and /etc/group.
func resolveUser(u string) (*syscall.Credential, string, error) {
	return resolveUserFrom(u, readColonFile("/etc/passwd"), readColonFile("/etc/group"))
}

func resolveUserFrom(u string, passwd, groups [][]string) (*syscall.Credential, string, error) {
	if u == "" {
		u = "0"
	}
	user, group, hasGroup := strings.Cut(u, ":")
	uid, gid := -1, -1
	home := "/"
	if n, err := strconv.Atoi(user); err == nil && n >= 0 {
		uid = n
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == user {
				gid, _ = strconv.Atoi(f[3])
				home = f[5]
				break
			}
		}
		if gid < 0 {
			gid = 0
		}
	} else {
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == user {
				uid, _ = strconv.Atoi(f[2])
				gid, _ = strconv.Atoi(f[3])
				home = f[5]
				break
			}
		}
		if uid < 0 {
			return nil, "", fmt.Errorf("unable to find user %s: no matching entries in passwd file", user)
		}
	}
	if hasGroup {
		if n, err := strconv.Atoi(group); err == nil && n >= 0 {
			gid = n
		} else {
			gid = -1
			for _, f := range groups {
				if len(f) >= 3 && f[0] == group {
					gid, _ = strconv.Atoi(f[2])
					break
				}
			}
			if gid < 0 {
				return nil, "", fmt.Errorf("unable to find group %s: no matching entries in group file", group)
			}
		}
	}
	if uid < 0 || gid < 0 || uid > 1<<31-2 || gid > 1<<31-2 {
		return nil, "", fmt.Errorf("invalid user %q", u)
	}
	var extra []uint32
	name := user
	for _, f := range groups {
		if len(f) >= 4 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m == name {
					if g, err := strconv.Atoi(f[2]); err == nil && g >= 0 {
						extra = append(extra, uint32(g))
					}
				}
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: extra}, home, nil
}

func readColonFile(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseColon(&limitReader{f, 4 << 20})
}

func parseColon(r io.Reader) [][]string {
	var out [][]string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		out = append(out, strings.Split(l, ":"))
	}
	return out
}

type limitReader struct {
	f io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// keptCaps is Docker's default capability set without CAP_MKNOD (there is
// no device cgroup here to stop a container from opening a host disk it
// created a node for).
var keptCaps = map[int]bool{
	unix.CAP_CHOWN: true, unix.CAP_DAC_OVERRIDE: true, unix.CAP_FSETID: true, unix.CAP_FOWNER: true,
	unix.CAP_NET_RAW: true, unix.CAP_SETGID: true, unix.CAP_SETUID: true, unix.CAP_SETFCAP: true,
	unix.CAP_SETPCAP: true, unix.CAP_NET_BIND_SERVICE: true, unix.CAP_SYS_CHROOT: true,
	unix.CAP_KILL: true, unix.CAP_AUDIT_WRITE: true,
}

// dropBoundingCaps limits what container processes can ever gain; the
// shim itself keeps its effective set (it sets uids, signals processes).
func dropBoundingCaps() error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 && n < 64 {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if keptCaps[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}
