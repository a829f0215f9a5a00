// This file tests the VMM's jail from the outside: the test binary is
// re-executed through the same jail code as `hyperd vm run --jail` (fresh
// namespaces, a cgroup, the pivot, the privilege drop, the VMM's seccomp
// filter), does what a VMM does after it, and the parent judges
// /proc/<pid> and what the kernel does to a forbidden syscall.

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/jail"
)

const jailChildEnv = "HYPERD_JAIL_TEST_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(jailChildEnv); dir != "" {
		os.Exit(jailChild(dir))
	}
	os.Exit(m.Run())
}

// jailChild is the fake VMM: it opens its vsock listener by the relative
// name prepare gives, enters the jail, works the Go runtime, dials the
// daemon's <uds>_1025 as the vsock device does, says "ready", then runs
// one command from stdin and exits 0 if it survived it.
func jailChild(dir string) int {
	fail := func(what string, err error) int { fmt.Println(what+":", err); return 3 }
	j := vmJail{dir: dir, uid: DefaultVMMID, gid: DefaultVMMID, noPivot: os.Getenv("HYPERD_JAIL_TEST_NOPIVOT") != ""}
	var kernel, initrd string
	uds, err := j.prepare(&kernel, &initrd, nil, filepath.Join(dir, "vsock.sock"))
	if err != nil {
		return fail("prepare", err)
	}
	ln, err := net.Listen("unix", uds)
	if err != nil {
		return fail("listen", err)
	}
	defer ln.Close()
	if err := j.enter(); err != nil {
		return fail("enter", err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			runtime.LockOSThread() // new threads: clone under the filter
			b := make([][]byte, 0, 64)
			for k := range 64 {
				b = append(b, make([]byte, 4096*(i+k)))
			}
			time.Sleep(5 * time.Millisecond)
			_ = b
		})
	}
	wg.Wait()
	runtime.GC()
	c, err := net.Dial("unix", uds+"_1025")
	if err != nil {
		return fail("dial", err)
	}
	c.Write([]byte("hello"))
	c.Close()
	fmt.Println("ready")
	cmd, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	switch strings.TrimSpace(cmd) {
	case "exit", "exit-nopivot":
	case "open":
		_, err := os.Open("/vsock.sock_1025")
		fmt.Println("open:", errnoName(err))
	case "ioctl-tty":
		_, err := unix.IoctlGetTermios(1, unix.TCGETS)
		fmt.Println("ioctl:", errnoName(err))
	case "mkdirat":
		unix.Mkdirat(unix.AT_FDCWD, "x", 0o700)
	case "socket-inet":
		unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	case "execve":
		syscall.Exec("/proc/self/exe", []string{"x"}, nil)
	case "fork":
		syscall.ForkExec("/x", []string{"x"}, nil)
	case "mmap-exec":
		unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_ANON|unix.MAP_PRIVATE)
	case "ptrace":
		unix.PtraceAttach(1)
	case "chroot":
		unix.Chroot("/")
	case "unshare":
		unix.Unshare(unix.CLONE_NEWUSER)
	default:
		return fail("command", errors.New(cmd))
	}
	return 0
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return fmt.Sprint(err)
}

func TestVMJail(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the jail needs root (namespaces, pivot_root, setuid)")
	}
	mnt, err := jail.CgroupMount()
	if err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		cmd  string
		sys  bool   // killed by SIGSYS
		want string // printed before a clean exit
	}{
		{cmd: "exit"},
		{cmd: "exit-nopivot"}, // an initramfs root (the nested runner's L1)
		{cmd: "chroot", sys: true},
		{cmd: "open", want: "open: EACCES"},
		{cmd: "ioctl-tty", want: "ioctl: ENOTTY"},
		{cmd: "mkdirat", sys: true},
		{cmd: "socket-inet", sys: true},
		{cmd: "execve", sys: true},
		{cmd: "fork", sys: true},
		{cmd: "mmap-exec", sys: true},
		{cmd: "ptrace", sys: true},
		{cmd: "unshare", sys: true},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			out, ws := runJailed(t, mnt, tc.cmd)
			switch {
			case tc.sys:
				if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
					t.Fatalf("%s: child ended %v, want killed by SIGSYS; output:\n%s", tc.cmd, ws, out)
				}
			case !ws.Exited() || ws.ExitStatus() != 0:
				t.Fatalf("%s: child ended %v, want exit 0; output:\n%s", tc.cmd, ws, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("%s: child printed %q, want %q", tc.cmd, out, tc.want)
			}
		})
	}
}

// runJailed starts the fake VMM the way the kvm driver starts `hyperd vm
// run`, checks it from the outside once it is ready, sends it cmd, and
// returns its output and how it ended.
func runJailed(t *testing.T, mnt, cmdName string) (string, syscall.WaitStatus) {
	dir := filepath.Join(t.TempDir(), "vm")
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	// the daemon's listener for guest-initiated connections, as kvmdrv makes it
	ready, err := net.Listen("unix", filepath.Join(dir, "vsock.sock_1025"))
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	if err := os.Chown(filepath.Join(dir, "vsock.sock_1025"), DefaultVMMID, DefaultVMMID); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(mnt, "hyperd-jail-test")
	cg, err := jail.NewCgroup(mnt, parent, fmt.Sprintf("vm-%d", os.Getpid()), jail.Limits{MemoryMax: 256 << 20, PidsMax: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(parent)
	defer jail.RemoveCgroup(cg.Path)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), jailChildEnv+"="+dir)
	if cmdName == "exit-nopivot" {
		cmd.Env = append(cmd.Env, "HYPERD_JAIL_TEST_NOPIVOT=1")
	}
	cmd.SysProcAttr = jail.SysProcAttr(cg)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cg.Close()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid

	hello := make(chan string, 1)
	go func() {
		c, err := ready.Accept()
		if err != nil {
			hello <- err.Error()
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		hello <- string(b)
	}()
	lines := make(chan string, 16)
	var rest strings.Builder
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(done)
	}()
	select {
	case l := <-lines:
		if l != "ready" {
			t.Fatalf("child said %q before ready", l)
		}
	case <-done:
		t.Fatal("child ended before it was ready")
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready in 20s")
	}
	if got := <-hello; got != "hello" {
		t.Errorf("the daemon's ready socket got %q from the jailed dial, want hello", got)
	}
	checkJailed(t, pid, dir, cg)

	fmt.Fprintln(stdin, cmdName)
	<-done
	close(lines)
	for l := range lines {
		rest.WriteString(l + "\n")
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return rest.String(), cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// checkJailed judges a running jailed process by its /proc entries.
func checkJailed(t *testing.T, pid int, dir string, cg *jail.Cgroup) {
	t.Helper()
	proc := fmt.Sprintf("/proc/%d", pid)
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net"} {
		theirs, err1 := os.Readlink(filepath.Join(proc, "ns", ns))
		ours, err2 := os.Readlink("/proc/self/ns/" + ns)
		if err1 != nil || err2 != nil || theirs == ours {
			t.Errorf("%s namespace: child %q, ours %q (%v %v): want a new one", ns, theirs, ours, err1, err2)
		}
	}
	// its root is the jail directory, and holds only the two sockets
	var root, jd unix.Stat_t
	if err := unix.Stat(proc+"/root/", &root); err != nil {
		t.Fatal(err)
	}
	unix.Stat(dir, &jd)
	if root.Dev != jd.Dev || root.Ino != jd.Ino {
		t.Errorf("child's root is dev %d ino %d, the jail is dev %d ino %d", root.Dev, root.Ino, jd.Dev, jd.Ino)
	}
	ents, _ := os.ReadDir(proc + "/root/")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"vsock.sock", "vsock.sock_1025"}) {
		t.Errorf("the child's / holds %v", names)
	}
	b, err := os.ReadFile(proc + "/status")
	if err != nil {
		t.Fatal(err)
	}
	id := strconv.Itoa(DefaultVMMID)
	status := string(b)
	for _, want := range []string{
		"Uid:\t" + strings.Repeat(id+"\t", 3) + id + "\n", "Gid:\t" + strings.Repeat(id+"\t", 3) + id + "\n",
		"CapInh:\t0000000000000000\n", "CapPrm:\t0000000000000000\n", "CapEff:\t0000000000000000\n",
		"CapAmb:\t0000000000000000\n", "NoNewPrivs:\t1\n", "Seccomp:\t2\n",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/%d/status lacks %q:\n%s", pid, want, status)
		}
	}
	for _, l := range strings.Split(status, "\n") {
		if g, ok := strings.CutPrefix(l, "Groups:"); ok && strings.TrimSpace(g) != "" {
			t.Errorf("supplementary groups left: %q", g)
		}
	}
	b, _ = os.ReadFile(proc + "/cgroup")
	rel := strings.TrimPrefix(cg.Path, strings.TrimSuffix(strings.TrimSuffix(cg.Path, filepath.Base(cg.Path)), "/"))
	wantCg := "0::/hyperd-jail-test" + rel + "\n"
	if !strings.Contains(string(b), wantCg) {
		t.Errorf("/proc/%d/cgroup lacks %q:\n%s", pid, wantCg, b)
	}
	if slices.Contains(cg.Unlimited, "memory.max") {
		t.Logf("this host's cgroup v2 has no memory controller: memory.max not checked")
	} else if b, _ := os.ReadFile(filepath.Join(cg.Path, "memory.max")); strings.TrimSpace(string(b)) != strconv.Itoa(256<<20) {
		t.Errorf("memory.max is %q", b)
	}
}
