// This file tests Install in a child process: the test binary re-executes
// itself, loads a filter, and the parent judges what the kernel did to it.

package seccomp

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const childEnv = "SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		child(what)
	}
	os.Exit(m.Run())
}

// child installs a filter that refuses mkdirat with EPERM and kills on
// getppid, then does what it was asked, printing what it saw. It exits 0
// only if it survived.
func child(what string) {
	// a thread that exists before Install and runs nothing else: only
	// TSYNC gives it the filter (threads made later inherit it anyway)
	locked, run, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(locked)
		<-run
		unix.Getppid()
		close(done)
	}()
	<-locked
	p := Policy{Default: Allow, Rules: []Rule{
		{Syscall: unix.SYS_MKDIRAT, Action: Errno(unix.EPERM)},
		{Syscall: unix.SYS_GETPPID, Action: KillProcess},
	}}
	if err := p.Install(); err != nil {
		os.Stdout.WriteString("install: " + err.Error() + "\n")
		os.Exit(10)
	}
	switch what {
	case "mkdirat":
		err := unix.Mkdirat(unix.AT_FDCWD, os.Getenv("SECCOMP_TEST_DIR"), 0o700)
		os.Stdout.WriteString("mkdirat: " + errName(err) + "\n")
	case "getppid":
		unix.Getppid()
	case "getppid-other-thread":
		close(run)
		<-done
	case "status":
		b, _ := os.ReadFile("/proc/self/status")
		os.Stdout.Write(b)
	}
	os.Exit(0)
}

func errName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func TestInstallInChild(t *testing.T) {
	for _, tc := range []struct {
		what   string
		signal syscall.Signal // 0: must exit 0
		out    string         // must appear on stdout
		nodir  bool           // the directory must not exist afterwards
	}{
		{what: "mkdirat", out: "mkdirat: EPERM", nodir: true},
		{what: "getppid", signal: syscall.SIGSYS},
		{what: "getppid-other-thread", signal: syscall.SIGSYS},
		{what: "status", out: "Seccomp:\t2"},
		{what: "status", out: "NoNewPrivs:\t1"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "made")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+tc.what, "SECCOMP_TEST_DIR="+dir)
			out, err := cmd.Output()
			var ee *exec.ExitError
			switch {
			case tc.signal != 0:
				if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != tc.signal {
					t.Fatalf("child ended with %v, want killed by %v; output:\n%s", err, tc.signal, out)
				}
			case err != nil:
				t.Fatalf("child: %v; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.out) {
				t.Errorf("child printed %q, want %q", out, tc.out)
			}
			if _, err := os.Stat(dir); tc.nodir && err == nil {
				t.Errorf("%s was created despite the filter", dir)
			}
		})
	}
}
