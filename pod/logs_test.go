package pod

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

func TestLogFileTornRecordAndTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.log")
	l, err := openLogFile(p, DefaultLogLimits, LogIndex{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, r := range []sandbox.LogRecord{
		{Stream: "stdout", Time: t0, Data: []byte("one\n")},
		{Stream: "stderr", Time: t0.Add(time.Second), Data: []byte("two\n")},
		{Stream: "stdout", Time: t0.Add(2 * time.Second), Data: []byte("three\n")},
	} {
		if err := l.append(r); err != nil {
			t.Fatal(i, err)
		}
	}
	l.close()
	// a crash mid-write leaves half a record
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{1, 0, 0, 0})
	f.Close()
	l, err = openLogFile(p, DefaultLogLimits, LogIndex{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if l.records != 3 || !l.last.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("records %d last %v", l.records, l.last)
	}
	tests := []struct {
		name           string
		stdout, stderr bool
		tail           int
		since          time.Time
		want           string
	}{
		{"all", true, true, -1, time.Time{}, "one\ntwo\nthree\n"},
		{"stdout", true, false, -1, time.Time{}, "one\nthree\n"},
		{"stderr", false, true, -1, time.Time{}, "two\n"},
		{"tail 1", true, true, 1, time.Time{}, "three\n"},
		{"tail 2 stdout", true, false, 2, time.Time{}, "one\nthree\n"},
		{"tail 0", true, true, 0, time.Time{}, ""},
		{"since", true, true, -1, t0.Add(time.Second), "two\nthree\n"},
	}
	for _, tc := range tests {
		var got string
		err := l.read(context.Background(), tc.stdout, tc.stderr, tc.tail, tc.since, false, func(e LogEntry) error {
			got += string(e.Data)
			return nil
		})
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.name, got, err, tc.want)
		}
	}
	// follow wakes on appends and ends when the log stops being live
	l.setLive(true)
	got := make(chan string)
	go func() {
		var s string
		l.read(context.Background(), true, true, 0, time.Time{}, true, func(e LogEntry) error { s += string(e.Data); return nil })
		got <- s
	}()
	time.Sleep(20 * time.Millisecond)
	l.append(sandbox.LogRecord{Stream: "stdout", Data: []byte("four\n")})
	time.Sleep(20 * time.Millisecond)
	l.setLive(false)
	if s := <-got; s != "four\n" {
		t.Fatalf("follow got %q", s)
	}
}
