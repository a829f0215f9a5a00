// This file tests container log limits: parsing log.config, rotation
// bounding the disk, and readers and followers across rotation.
package pod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

func TestParseLogLimits(t *testing.T) {
	def := LogLimits{MaxSize: 7, MaxFiles: 2}
	for _, tc := range []struct {
		opts map[string]string
		want LogLimits
		err  bool
	}{
		{nil, def, false},
		{map[string]string{"max-size": "10k"}, LogLimits{10 << 10, 2}, false},
		{map[string]string{"max-size": "10m", "max-file": "5"}, LogLimits{10 << 20, 5}, false},
		{map[string]string{"max-size": "1g"}, LogLimits{1 << 30, 2}, false},
		{map[string]string{"max-size": "1.5K"}, LogLimits{1536, 2}, false},
		{map[string]string{"max-size": "10MiB"}, LogLimits{10 << 20, 2}, false},
		{map[string]string{"max-size": "100", "tag": "x", "compress": "true"}, LogLimits{100, 2}, false},
		{map[string]string{"max-file": "1"}, LogLimits{7, 1}, false},
		{map[string]string{"max-size": "0"}, def, true},
		{map[string]string{"max-size": "-1"}, def, true},
		{map[string]string{"max-size": "10x"}, def, true},
		{map[string]string{"max-size": ""}, def, true},
		{map[string]string{"max-size": "2t"}, def, true},
		{map[string]string{"max-size": "99999999999999999999g"}, def, true},
		{map[string]string{"max-file": "0"}, def, true},
		{map[string]string{"max-file": "two"}, def, true},
		{map[string]string{"max-file": "101"}, def, true},
		{map[string]string{"max-sise": "10m"}, def, true},
	} {
		got, err := ParseLogLimits(tc.opts, def)
		if (err != nil) != tc.err || err == nil && got != tc.want {
			t.Errorf("%v: %+v %v, want %+v err %v", tc.opts, got, err, tc.want, tc.err)
		}
	}
}

// TestSpecLogConfig: bad log.config values are a SpecError (a 400) at create.
func TestSpecLogConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg map[string]string
		ok  bool
	}{
		{nil, true},
		{map[string]string{"max-size": "10m", "max-file": "3"}, true},
		{map[string]string{"max-size": "ten"}, false},
		{map[string]string{"max-file": "0"}, false},
		{map[string]string{"nope": "1"}, false},
	} {
		s := &PodSpec{ID: "p1", Log: LogConfig{Type: "json-file", Config: tc.cfg}}
		err := s.Normalize()
		var se *SpecError
		if tc.ok && err != nil || !tc.ok && !errors.As(err, &se) {
			t.Errorf("%v: %v", tc.cfg, err)
		}
	}
}

// rec is record i: 13 bytes of header + 10 of data = 23 bytes.
func rec(i int, t0 time.Time) sandbox.LogRecord {
	st := "stdout"
	if i%2 == 1 {
		st = "stderr"
	}
	return sandbox.LogRecord{Stream: st, Time: t0.Add(time.Duration(i) * time.Second), Data: fmt.Appendf(nil, "line-%04d\n", i)}
}

func lines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "line-%04d\n", i)
	}
	return b.String()
}

func dirBytes(t *testing.T, dir string) (total int64, files int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		files++
	}
	return
}

func readAll(t *testing.T, l *logFile, tail int, since time.Time) string {
	var got strings.Builder
	if err := l.read(context.Background(), true, true, tail, since, false, func(e LogEntry) error {
		got.Write(e.Data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got.String()
}

// TestLogRotationBoundsDisk: a container writing far past its cap keeps at
// most MaxSize*MaxFiles bytes on disk (+ one record), the newest records,
// in MaxFiles files; reads see exactly the kept records in order.
func TestLogRotationBoundsDisk(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		lim  LogLimits
		n    int
		kept int // records kept: 10 a file of 230 bytes
	}{
		{LogLimits{230, 3}, 1000, 30},
		{LogLimits{230, 1}, 1000, 10},
		{LogLimits{240, 2}, 1005, 15}, // 5 in the current file
		{LogLimits{100, 4}, 50, 14},   // 4 a file, 2 in the current one
		{LogLimits{10, 2}, 7, 2},      // records larger than the cap: one a file
	} {
		dir := t.TempDir()
		l, err := openLogFile(filepath.Join(dir, "c.log"), tc.lim, LogIndex{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < tc.n; i++ {
			if err := l.append(rec(i, t0)); err != nil {
				t.Fatal(err)
			}
		}
		total, files := dirBytes(t, dir)
		// a file passes MaxSize only with a single record larger than it
		if total > max(tc.lim.MaxSize, 23)*int64(tc.lim.MaxFiles) || files > tc.lim.MaxFiles {
			t.Errorf("%+v: %d bytes in %d files on disk", tc.lim, total, files)
		}
		if got, want := readAll(t, l, -1, time.Time{}), lines(tc.n-tc.kept, tc.n); got != want {
			t.Errorf("%+v: read %q, want %q", tc.lim, got, want)
		}
		l.remove()
		if _, files := dirBytes(t, dir); files != 0 {
			t.Errorf("%+v: %d files left after remove", tc.lim, files)
		}
	}
}

// TestLogReadAcrossRotation: tail and since count records across the
// rotated files and the current one.
func TestLogReadAcrossRotation(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l, err := openLogFile(filepath.Join(t.TempDir(), "c.log"), LogLimits{230, 3}, LogIndex{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	for i := 0; i < 45; i++ { // 20 rotated away; 10 in .2, 10 in .1, 5 current
		if err := l.append(rec(i, t0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		tail  int
		since time.Time
		want  string
	}{
		{"all", -1, time.Time{}, lines(20, 45)},
		{"tail 0", 0, time.Time{}, ""},
		{"tail in current", 3, time.Time{}, lines(42, 45)},
		{"tail spans files", 17, time.Time{}, lines(28, 45)},
		{"tail beyond kept", 1000, time.Time{}, lines(20, 45)},
		{"since in .2", -1, t0.Add(27 * time.Second), lines(27, 45)},
		{"since in .1", -1, t0.Add(30 * time.Second), lines(30, 45)},
		{"since and tail", 2, t0.Add(25 * time.Second), lines(43, 45)},
		{"since after all", -1, t0.Add(time.Hour), ""},
	} {
		if got := readAll(t, l, tc.tail, tc.since); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// stdout only (even records), tail across files
	var got strings.Builder
	l.read(context.Background(), true, false, 4, time.Time{}, false, func(e LogEntry) error { got.Write(e.Data); return nil })
	if want := "line-0038\nline-0040\nline-0042\nline-0044\n"; got.String() != want {
		t.Errorf("stdout tail 4: %q, want %q", got.String(), want)
	}
}

// TestLogFollowAcrossRotation: a follower keeps following when the file it
// reads is rotated, even when it lags behind (blocked in its callback)
// while the writer rotates twice: every line once, in order. (Six files
// kept: no file it has still to read is removed, so nothing may be lost.)
func TestLogFollowAcrossRotation(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		tail int
		pre  int // records before the follower starts
	}{
		{"from the last record", 1, 5}, // (the follower's first record exists before it starts)
		{"tail across a rotation", 12, 25},
		{"everything", -1, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := openLogFile(filepath.Join(t.TempDir(), "c.log"), LogLimits{230, 6}, LogIndex{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			for i := 0; i < tc.pre; i++ {
				l.append(rec(i, t0))
			}
			l.setLive(true)
			first := make(chan struct{})
			release := make(chan struct{})
			done := make(chan string)
			go func() {
				var got strings.Builder
				n := 0
				err := l.read(context.Background(), true, true, tc.tail, time.Time{}, true, func(e LogEntry) error {
					got.Write(e.Data)
					if n++; n == 1 {
						close(first)
						<-release // lag while the writer rotates
					}
					return nil
				})
				if err != nil {
					got.WriteString("error: " + err.Error())
				}
				done <- got.String()
			}()
			end := tc.pre + 25 // two more rotations at least
			<-first            // the follower holds its first record: it lags from here
			for i := tc.pre; i < end; i++ {
				l.append(rec(i, t0))
			}
			close(release)
			// then more while it follows, across a third rotation
			for i := end; i < end+15; i++ {
				l.append(rec(i, t0))
				time.Sleep(time.Millisecond)
			}
			l.setLive(false)
			from := tc.pre - tc.tail
			if tc.tail < 0 {
				from = 0
			}
			if got, want := <-done, lines(from, end+15); got != want {
				t.Fatalf("followed %q, want %q", got, want)
			}
		})
	}
}

// TestLogReopenAfterRotation: a daemon restarting right after a rotation
// (empty current file) still knows the last record's time, so reattaching
// does not copy the guest's records again; files beyond max-file go.
func TestLogReopenAfterRotation(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dir := t.TempDir()
	p := filepath.Join(dir, "c.log")
	l, err := openLogFile(p, LogLimits{230, 4}, LogIndex{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		l.append(rec(i, t0))
	}
	// the rotation done, the first record of the new file not yet written
	l.mu.Lock()
	err = l.rotateLocked()
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	l.close()
	l, err = openLogFile(p, LogLimits{230, 2}, LogIndex{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if want := t0.Add(39 * time.Second); !l.lastTime().Equal(want) {
		t.Errorf("last %v, want %v", l.lastTime(), want)
	}
	if _, files := dirBytes(t, dir); files != 2 {
		t.Errorf("%d files after reopening with max-file 2", files)
	}
	if got, want := readAll(t, l, -1, time.Time{}), lines(30, 40); got != want {
		t.Errorf("read %q, want %q", got, want)
	}
}
