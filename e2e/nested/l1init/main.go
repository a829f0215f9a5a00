// Command l1init is PID 1 of the nested runner's L1 guest (a Linux with a
// real /dev/kvm under QEMU's emulated SVM). It mounts the kernel file
// systems and cgroup2, loads the modules listed in /l1/modules/order
// (kvm, kvm-amd, virtio-net ...), brings up the user-mode network QEMU
// offers, writes a heartbeat to the second serial port every second (the
// runner's liveness signal that goes through neither the network nor any
// test), and serves commands on TCP port nested.GuestPort (proto.go).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/nested"
	"github.com/hyperhq/hyperd-go/internal/guestinit"
	"golang.org/x/sys/unix"
)

const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "l1init: "+format+"\n", a...)
}

func main() {
	if os.Getpid() != 1 {
		logf("must run as PID 1")
		os.Exit(2)
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		os.Stdout, os.Stderr = f, f
	}
	os.Setenv("PATH", basePath)
	mounts()
	modules("/l1/modules")
	traceCodePatches()
	holdStaticKeys()
	settleBootPatches("holding static keys, one vCPU online")
	onlineCPUs()
	settleBootPatches("bringing the vCPUs online")
	network()
	go heartbeat("/dev/ttyS1")
	go reap()
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", nested.GuestPort))
	if err != nil {
		logf("listen: %v", err)
		poweroff()
	}
	logf("ready: serving commands on :%d", nested.GuestPort)
	for {
		c, err := ln.Accept()
		if err != nil {
			logf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

// onlineCPUs brings up the vCPUs the kernel left offline: the runner boots
// L1 with maxcpus=1, so that the kernel's own code patching while it boots
// (alternatives, static keys, and holdStaticKeys's toggles)
// happens with one CPU running; cross-modifying code that another vCPU
// executes is what froze L1 under TCG (keys.go), at boot too: a fresh L1
// did not come up in CI, one vCPU frozen at that key's site in __schedule,
// the other at the INT3 handler's entry.
func onlineCPUs() {
	n, err := guestinit.OnlineCPUs("/sys")
	if err != nil {
		logf("%v", err)
	}
	logf("brought %d more vCPUs online", n)
}

func mounts() {
	for _, m := range []struct{ src, dst, typ, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", ""},
		{"tmpfs", "/run", "tmpfs", ""},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", ""},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, m.data); err != nil {
			logf("mount %s: %v", m.dst, err)
		}
	}
	os.Remove("/dev/ptmx")
	os.Symlink("pts/ptmx", "/dev/ptmx")
	for _, d := range []string{"/tmp", "/var/tmp", "/root"} {
		os.MkdirAll(d, 0o1777)
	}
	// hyperd puts each pod's processes in a cgroup of its own: hand the
	// controllers down from the root.
	os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+cpu +memory +pids +io"), 0o644)
}

func modules(dir string) {
	cmdline, _ := os.ReadFile("/proc/cmdline")
	err := guestinit.LoadModules(dir, func(mod string) string {
		p := guestinit.ModuleParams(string(cmdline), mod)
		if p != "" {
			logf("insmod %s %s", mod, p)
		}
		return p
	})
	if err != nil {
		logf("modules: %v", err)
	}
}

// network configures QEMU's user-mode network: 10.0.2.15/24, gateway (the
// host's loopback, seen from here) 10.0.2.2.
func network() {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "eth0", "up"},
		{"addr", "add", "10.0.2.15/24", "dev", "eth0"},
		{"route", "add", "default", "via", "10.0.2.2"},
	} {
		if out, err := exec.Command("/bin/busybox", append([]string{"ip"}, args...)...).CombinedOutput(); err != nil {
			logf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	os.WriteFile("/etc/resolv.conf", []byte("nameserver 10.0.2.3\n"), 0o644)
}

func heartbeat(dev string) {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		logf("heartbeat: %v", err)
		return
	}
	for range time.Tick(time.Second) {
		up, _ := os.ReadFile("/proc/uptime")
		fmt.Fprintf(f, "hb %s\n", strings.Fields(string(up) + " ?")[0])
	}
}

func poweroff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// The reaper: PID 1 inherits every orphan, so one loop waits for all
// children and hands each command's status to the goroutine that started
// it. Starting and registering a command happen under mu, so a child that
// exits at once is never reaped before its waiter is known.
var (
	mu      sync.Mutex
	waiters = map[int]chan unix.WaitStatus{}
)

func reap() {
	sig := make(chan os.Signal, 16)
	signalNotify(sig)
	for range sig {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			mu.Lock()
			if ch, ok := waiters[pid]; ok {
				ch <- ws
				delete(waiters, pid)
			}
			mu.Unlock()
		}
	}
}

func serve(c net.Conn) {
	defer c.Close()
	defer func() {
		// PID 1 must not die with one command: its exit panics L1
		if r := recover(); r != nil {
			logf("serving %s: panic: %v", c.RemoteAddr(), r)
		}
	}()
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	var req nested.Request
	if err := json.Unmarshal(line, &req); err != nil {
		nested.WriteExit(c, nested.Exit{Code: -1, Error: "bad request: " + err.Error()})
		return
	}
	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return nested.WriteFrame(c, typ, p)
	}
	switch {
	case req.Ping:
		up, _ := os.ReadFile("/proc/uptime")
		send(nested.FramePong, up)
		return
	case req.Poweroff:
		nested.WriteExit(c, nested.Exit{})
		c.Close()
		logf("powering off")
		poweroff()
	}
	if len(req.Argv) == 0 {
		nested.WriteExit(c, nested.Exit{Code: -1, Error: "empty argv"})
		return
	}
	code, err := run(req, send, br)
	e := nested.Exit{Code: code}
	if err != nil {
		e = nested.Exit{Code: -1, Error: err.Error()}
	}
	e.CodePatches = takeCodePatches()
	b, _ := json.Marshal(e)
	send(nested.FrameExit, b)
}

// run starts the command in a process group of its own and waits for it.
// The runner closing its connection (its deadline, or a ^C) kills the
// whole group.
func run(req nested.Request, send func(byte, []byte) error, conn *bufio.Reader) (int, error) {
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = append([]string{"PATH=" + basePath, "HOME=/root", "TMPDIR=/tmp"}, req.Env...)
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Wait is not used (the reaper owns wait4): the output is read from
	// the pipes here and sent as frames.
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return -1, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return -1, err
	}
	ch := make(chan unix.WaitStatus, 1)
	mu.Lock()
	err = cmd.Start()
	if err == nil {
		waiters[cmd.Process.Pid] = ch
	}
	mu.Unlock()
	if err != nil {
		return -1, err
	}
	pid := cmd.Process.Pid
	var copies sync.WaitGroup
	for _, p := range []struct {
		r   *os.File
		typ byte
	}{{stdout.(*os.File), nested.FrameStdout}, {stderr.(*os.File), nested.FrameStderr}} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := p.r.Read(buf)
				if n > 0 {
					send(p.typ, buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	gone := make(chan struct{})
	go func() {
		// the runner sends nothing after its request: a read returning
		// means it closed the connection
		conn.ReadByte()
		close(gone)
	}()
	var ws unix.WaitStatus
	select {
	case ws = <-ch:
	case <-gone:
		unix.Kill(-pid, unix.SIGKILL)
		ws = <-ch
	}
	// children left behind keep the pipes open: kill the group after the
	// leader exits so the output copies end.
	unix.Kill(-pid, unix.SIGKILL)
	stdout.(*os.File).SetReadDeadline(time.Now().Add(5 * time.Second))
	stderr.(*os.File).SetReadDeadline(time.Now().Add(5 * time.Second))
	copies.Wait()
	stdout.Close()
	stderr.Close()
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return -1, fmt.Errorf("unexpected wait status %#x", ws)
}
