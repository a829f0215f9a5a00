package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// suiteDaemon starts hyperd with the suites' driver (suiteDriver) on a temp
// socket and data root with the busybox image loaded; it is stopped
// (SIGTERM) when the test ends.
func suiteDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	requireHost(t)
	bin := binaries(t)
	tmp := t.TempDir()
	driver := suiteDriver()
	d := startDaemon(t, bin, filepath.Join(tmp, "root"), filepath.Join(tmp, "hyper.sock"), driver, driverFlags(t, driver)...)
	t.Cleanup(func() {
		if t.Failed() {
			// the daemon's view of what went wrong, for a CI log that
			// is all there is to read
			failed(driver, t.Name())
			t.Logf("hyperd --driver %s log tail:\n%s", driver, d.log())
			t.Logf("sandbox logs:\n%s", d.sandboxLogs())
		}
		// pods outlive a stopped daemon: remove them, even after a failure
		if l, err := d.c.List(context.Background(), "pod", ""); err == nil {
			for _, p := range l.PodData {
				d.c.RemovePod(context.Background(), strings.SplitN(p, ":", 2)[0])
			}
		}
		d.signal(syscall.SIGTERM)
	})
	d.loadBusybox()
	return d, bin
}

// hyperctl runs the hyperctl binary against d with stdin /dev/null.
func (d *daemon) hyperctl(bin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "hyperctl"), append([]string{"-H", "unix://" + d.sock}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ptsName is what tty prints inside a container: a terminal of the
// container's own /dev/pts (not "not a tty").
var ptsName = regexp.MustCompile(`^/dev/pts/\d+\r?\n$`)

// TestE2ETTY: a tty process started through hyperd (hyperctl run -t,
// hyperctl exec -t, podArgs "tty":true with the Go client and curl, exec
// create tty=true with curl) has a terminal inside its container: tty
// prints /dev/pts/N; stty size and a resize work; an interactive hyperctl
// exec -t -i on a terminal puts its size into the container, follows
// SIGWINCH, and ^C interrupts the container's foreground process.
func TestE2ETTY(t *testing.T) {
	d, bin := suiteDaemon(t)
	c := d.c
	ctx := ctxT(t, 3*time.Minute)

	// hyperctl run -t
	if out, err := d.hyperctl(bin, "run", "--rm", "-t", "busybox", "tty"); err != nil || !ptsName.MatchString(out) {
		t.Errorf("hyperctl run -t busybox tty: %q %v, want /dev/pts/N", out, err)
	}
	// without -t there is no terminal, as in docker
	if out, err := d.hyperctl(bin, "run", "--rm", "busybox", "tty"); err == nil || !strings.Contains(out, "not a tty") {
		t.Errorf("hyperctl run busybox tty: %q %v, want not a tty and a failure", out, err)
	}

	// podArgs "tty":true (curl create, Go client attach before start)
	d.expect("POST", "/pod/create?podArgs="+q(`{"id":"tty-pod","tty":true,"containers":[{"image":"busybox","name":"ttyc","command":["sh","-c","tty; stty size"]}]}`), "", 201, `"ID":"tty-pod"`)
	st, err := c.Attach(ctx, "ttyc", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartPod(ctx, "tty-pod"); err != nil {
		t.Fatalf("start: %v\n%s", err, d.log())
	}
	var so bytes.Buffer
	st.Pump(true, nil, &so, nil)
	// no size was given: the terminal is 80x24 rather than 0x0, on which
	// busybox's stty size fails
	lines := strings.SplitAfterN(so.String(), "\n", 2)
	if len(lines) != 2 || !ptsName.MatchString(lines[0]) || lines[1] != "24 80\r\n" {
		t.Errorf("podArgs tty: attach %q, want /dev/pts/N and 24 80", so.String())
	}
	// curl: the logs of a tty container are raw (no frames); complete once
	// /exitcode answered
	d.expect("GET", "/exitcode?container=ttyc", "", 200, "0")
	if _, logs := d.curl("GET", "/container/logs?container=ttyc&stdout=1&stderr=1", ""); logs != so.String() {
		t.Errorf("tty logs by curl %q, attach saw %q", logs, so.String())
	}
	d.expect("DELETE", "/pod?podId=tty-pod", "", 200, `"ID":"tty-pod"`)

	// a running pod without a tty: exec -t into it
	d.expect("POST", "/pod/create", `{"id":"tty-srv","containers":[{"image":"busybox","name":"srv","command":["sleep","1000"]}]}`, 201, `"ID":"tty-srv"`)
	d.expect("POST", "/pod/start?podId=tty-srv", "", 200, "{}")
	if out, err := d.hyperctl(bin, "exec", "-t", "srv", "tty"); err != nil || !ptsName.MatchString(out) {
		t.Errorf("hyperctl exec -t srv tty: %q %v, want /dev/pts/N", out, err)
	}
	if out, err := d.hyperctl(bin, "exec", "srv", "tty"); err == nil || !strings.Contains(out, "not a tty") {
		t.Errorf("hyperctl exec srv tty: %q %v, want not a tty", out, err)
	}
	// Go client: exec create tty, start
	eid, err := c.ExecCreate(ctx, "srv", []string{"tty"}, true)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.ExecStart(ctx, "srv", eid)
	if err != nil {
		t.Fatal(err)
	}
	so.Reset()
	es.Pump(true, nil, &so, nil)
	if !ptsName.MatchString(so.String()) {
		t.Errorf("Go client tty exec: %q, want /dev/pts/N", so.String())
	}
	// curl: exec create tty=true, exec start (200, raw stream)
	b := d.expect("POST", "/exec/create?container=srv&tty=true&command="+q(`["tty"]`), "", 201, `"exec-`)
	var curlExec string
	json.Unmarshal([]byte(b), &curlExec)
	if _, out := d.curl("POST", "/exec/start?container=srv&exec="+curlExec, ""); !ptsName.MatchString(out) {
		t.Errorf("curl tty exec: %q, want /dev/pts/N (raw)", out)
	}
	d.expect("GET", "/exitcode?container=srv&exec="+curlExec, "", 200, "0")

	t.Run("interactive", func(t *testing.T) { interactiveExec(t, d, bin) })
	d.expect("DELETE", "/pod?podId=tty-srv", "", 200, `"ID":"tty-srv"`)
}

// interactiveExec runs hyperctl exec -t -i on a terminal of ours (a pty
// whose slave is hyperctl's controlling terminal), as a user at a shell.
func interactiveExec(t *testing.T, d *daemon, bin string) {
	cmd := exec.Command(filepath.Join(bin, "hyperctl"), "-H", "unix://"+d.sock, "exec", "-t", "-i", "srv", "sh")
	ptm, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 111})
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	var mu sync.Mutex
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	seen := func(re string) bool {
		mu.Lock()
		defer mu.Unlock()
		return regexp.MustCompile(re).Match(out.Bytes())
	}
	// type cmd until want shows up (the terminal size follows a SIGWINCH
	// asynchronously, so some commands are retried)
	typeUntil := func(cmdline, want string, retry bool) {
		t.Helper()
		io.WriteString(ptm, cmdline+"\n")
		deadline := time.Now().Add(slow(15 * time.Second))
		next := time.Now().Add(300 * time.Millisecond)
		for !seen(want) {
			if time.Now().After(deadline) {
				mu.Lock()
				got := out.String()
				mu.Unlock()
				// the container's processes: comm, state, ppid, pgrp,
				// session, tty, the tty's foreground group (tpgid)
				procs, _ := d.hyperctl(bin, "exec", "srv", "sh", "-c", `for p in /proc/[0-9]*; do echo "$p $(cut -d' ' -f2-8 $p/stat)"; done`)
				t.Fatalf("typed %q, no %q in the terminal:\n%q\nprocesses (pid comm state ppid pgrp session tty tpgid):\n%s\nhyperd log:\n%s", cmdline, want, got, procs, d.log())
			}
			if retry && time.Now().After(next) {
				io.WriteString(ptm, cmdline+"\n")
				next = time.Now().Add(300 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// hyperctl sends its terminal's size before it forwards any input
	typeUntil("stty size; tty", `33 111\r?\n/dev/pts/\d+\r?\n`, false)
	ptsSetsize(t, ptm, 41, 121) // SIGWINCH to hyperctl
	typeUntil("stty size", `41 121\r?\n`, true)
	// ^C reaches the container's foreground process group (the terminal
	// is raw on our side, the container's tty turns it into SIGINT). The
	// shell sleeps a second at a time: a ^C that lands while it forks a
	// sleep goes to the shell alone (fork restarts after the signal), and
	// the shell runs its trap only once that sleep ends; one long sleep
	// made that wait 100 s (CI saw it once in L1).
	typeUntil(`sh -c 'trap "echo got-INT; exit 7" INT; echo armed; while :; do sleep 1; done'`, `\narmed\r?\n`, false)
	ptm.Write([]byte{3})
	typeUntil("echo status=$?", `got-INT\r?\n(.|\n)*status=7\r?\n`, false)
	io.WriteString(ptm, "exit 5\n")
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 5 {
			t.Errorf("hyperctl exec -t -i: %v, want exit status 5", waitErr)
		}
	case <-time.After(slow(20 * time.Second)):
		mu.Lock()
		got := out.String()
		mu.Unlock()
		t.Fatalf("hyperctl exec -t -i did not end after exit:\n%q", got)
	}
}

func ptsSetsize(t *testing.T, ptm *os.File, rows, cols uint16) {
	t.Helper()
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
}
