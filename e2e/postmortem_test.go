// This file owns the e2e harness's post-mortem: what a test prints when a
// request to hyperd timed out or failed outright, so that a hang seen once
// (often only in the nested runner) can be explained from its log: hyperd's
// goroutine stacks and the tails of every pod VM's console and VMM logs.

package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// postmortem ends hyperd with SIGQUIT (the Go runtime writes every
// goroutine's stack to its log) and returns the log's tail and the tails of
// the sandboxes' console.log and vmm.log files under the data root. The
// daemon is gone afterwards: call it only on the way to a test failure.
func (d *daemon) postmortem() string {
	var b strings.Builder
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGQUIT)
		for i := 0; i < 200 && d.cmd.Process.Signal(syscall.Signal(0)) == nil; i++ {
			time.Sleep(25 * time.Millisecond)
		}
	}
	log, _ := os.ReadFile(d.logf)
	before, stacks, _ := strings.Cut(string(log), "SIGQUIT: quit")
	fmt.Fprintf(&b, "--- hyperd log (tail):\n%s\n", tail([]byte(before), 8000))
	fmt.Fprintf(&b, "--- hyperd goroutines blocked for a minute or more:\n%s\n", longBlocked(stacks, 40, 30))
	b.WriteString(d.sandboxLogs())
	return b.String()
}

// stop ends the daemon when its test is done: SIGTERM, or, when the test
// failed, the post-mortem (logged), so that a failure reported as one
// error line (an exec that got no answer, say) still shows the daemon's
// and the pod VMs' side of it.
func (d *daemon) stop() {
	if d.t.Failed() {
		d.t.Logf("post-mortem of hyperd --driver %s:\n%s", d.driver, d.postmortem())
		return
	}
	d.signal(syscall.SIGTERM)
}

// sandboxLogs returns the tails of the sandboxes' console.log and vmm.log
// files under the data root (a pod VM's guest kernel and agent messages,
// its VMM's stop line).
func (d *daemon) sandboxLogs() string {
	var b strings.Builder
	filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || (e.Name() != "console.log" && e.Name() != "vmm.log") {
			return nil
		}
		if c, err := os.ReadFile(p); err == nil {
			fmt.Fprintf(&b, "--- %s (tail):\n%s\n", p, tail(c, 6000))
		}
		return nil
	})
	return b.String()
}

// longBlocked keeps, of a Go goroutine dump, the goroutines the runtime says
// have waited a minute or more ("[chan receive, 3 minutes]"): where a hang
// is. At most max goroutines of at most lines lines each.
func longBlocked(dump string, max, lines int) string {
	var b strings.Builder
	n := 0
	for _, g := range strings.Split(dump, "\n\n") {
		g = strings.TrimSpace(g)
		head, _, _ := strings.Cut(g, "\n")
		if !strings.HasPrefix(head, "goroutine ") || !strings.Contains(head, "minute") {
			continue
		}
		if n++; n > max {
			b.WriteString("...\n")
			break
		}
		l := strings.Split(g, "\n")
		if len(l) > lines {
			l = append(l[:lines], "...")
		}
		b.WriteString(strings.Join(l, "\n") + "\n\n")
	}
	return b.String()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func TestLongBlocked(t *testing.T) {
	dump := "\ngoroutine 1 [running]:\nmain.main()\n\n" +
		"goroutine 7 [chan receive, 3 minutes]:\npod.(*Daemon).runBuildStep()\n\tpod/build.go:95\n\n" +
		"goroutine 9 [IO wait]:\nnet.(*conn).Read()\n\n" +
		"goroutine 12 [select, 1 minutes]:\na()\nb()\nc()\n"
	for _, tc := range []struct {
		max, lines int
		want       string
	}{
		{10, 10, "goroutine 7 [chan receive, 3 minutes]:\npod.(*Daemon).runBuildStep()\n\tpod/build.go:95\n\ngoroutine 12 [select, 1 minutes]:\na()\nb()\nc()\n\n"},
		{1, 10, "goroutine 7 [chan receive, 3 minutes]:\npod.(*Daemon).runBuildStep()\n\tpod/build.go:95\n\n...\n"},
		{10, 2, "goroutine 7 [chan receive, 3 minutes]:\npod.(*Daemon).runBuildStep()\n...\n\ngoroutine 12 [select, 1 minutes]:\na()\n...\n\n"},
	} {
		if got := longBlocked(dump, tc.max, tc.lines); got != tc.want {
			t.Errorf("longBlocked(max %d, lines %d) =\n%q\nwant\n%q", tc.max, tc.lines, got, tc.want)
		}
	}
}
