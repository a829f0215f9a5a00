// This file tests the console log writer: the cap, the newest output
// kept, block writes, prompt flushes, and rotation on open files only.
package consolelog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func fileSize(t *testing.T, p string) int64 {
	st, err := os.Stat(p)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestCapKeepsNewest: a guest printing far past the cap, in chunks of any
// size (the UART writes one byte at a time), leaves at most the cap on
// disk, and the two files hold a contiguous end of what it printed, at
// least half the cap, up to its last byte.
func TestCapKeepsNewest(t *testing.T) {
	for _, tc := range []struct {
		max   int64
		chunk int
		total int
	}{
		{16 << 10, 1, 100 << 10},
		{16 << 10, 100, 1 << 20},
		{16 << 10, 20 << 10, 1 << 20}, // writes larger than a block and than a file
		{MinMax, 7, 50 << 10},
		{1 << 20, 4096, 8 << 20},
	} {
		p := filepath.Join(t.TempDir(), "console.log")
		w, err := Open(p, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		var all bytes.Buffer
		for i := 0; all.Len() < tc.total; i++ {
			fmt.Fprintf(&all, "[%8d] line of the guest console\n", i)
		}
		src := all.Bytes()
		for len(src) > 0 {
			k := min(tc.chunk, len(src))
			w.Write(src[:k])
			src = src[k:]
			if on := fileSize(t, p) + fileSize(t, p+".1"); on > tc.max {
				t.Fatalf("max %d: %d bytes on disk", tc.max, on)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := Tail(p, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) > tc.max || int64(len(got)) < tc.max/2 || !bytes.HasSuffix(all.Bytes(), got) {
			t.Errorf("max %d chunk %d: kept %d bytes, not an end of the output of at least half the cap", tc.max, tc.chunk, len(got))
		}
		if tl, _ := Tail(p, 100); !bytes.Equal(tl, all.Bytes()[all.Len()-100:]) {
			t.Errorf("max %d chunk %d: Tail 100 = %q", tc.max, tc.chunk, tl)
		}
	}
}

// TestBlockWrites: byte-at-a-time console output reaches the file in
// blocks, not a write(2) per byte.
func TestBlockWrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := Open(p, DefaultMax)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64 << 10
	for i := 0; i < n; i++ {
		w.Write([]byte{'a' + byte(i%26)})
	}
	w.Close()
	w.mu.Lock()
	writes := w.writes
	w.mu.Unlock()
	t.Logf("%d write(2) calls for %d bytes written one at a time", writes, n)
	// 8 full blocks, plus at most a few timer flushes of partial ones
	if writes > n/block+4 {
		t.Errorf("%d writes for %d bytes written one at a time", writes, n)
	}
	if fileSize(t, p) != n {
		t.Errorf("%d bytes in the file, want %d", fileSize(t, p), n)
	}
}

// TestFlushPromptly: a short line is on disk within FlushDelay (plus
// scheduling) without Close, so a failure's console tail is fresh.
func TestFlushPromptly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := Open(p, DefaultMax)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("Kernel panic - not syncing\n"))
	if b, _ := os.ReadFile(p); len(b) != 0 {
		t.Fatalf("written at once (%q): not buffered", b)
	}
	deadline := time.Now().Add(FlushDelay + 5*time.Second)
	for {
		if b, _ := os.ReadFile(p); string(b) == "Kernel panic - not syncing\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the line never reached the file without Close")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOpenStartsFresh: a new VM's console log drops the previous one and
// its rotated half; Open refuses a cap too small to hold a block.
func TestOpenStartsFresh(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(p, []byte("old boot\n"), 0o600)
	os.WriteFile(p+".1", []byte("older boot\n"), 0o600)
	w, err := Open(p, DefaultMax)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("new boot\n"))
	w.Close()
	if got, err := Tail(p, 1<<20); err != nil || string(got) != "new boot\n" {
		t.Errorf("Tail = %q %v", got, err)
	}
	if _, err := Open(p, MinMax-1); err == nil {
		t.Error("a cap below MinMax accepted")
	}
	if _, err := Tail(filepath.Join(t.TempDir(), "none"), 10); err == nil {
		t.Error("Tail of a missing log succeeded")
	}
}

// TestRotateWithoutPaths: the writer rotates on its open files alone, as a
// jailed VMM must (no path to the log, no open or rename allowed): the
// directory is moved away after Open, and the log is still capped and
// keeps the newest output.
func TestRotateWithoutPaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	w, err := Open(filepath.Join(dir, "console.log"), 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := 0; i < 500; i++ {
		line := []byte(fmt.Sprintf("line %04d\n", i))
		all = append(all, line...)
		w.Write(line)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := Tail(filepath.Join(moved, "console.log"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 4<<10 || len(got) < 2<<10 || !bytes.HasSuffix(all, got) {
		t.Errorf("kept %d bytes, want the newest 2..4 KiB of the output: %q", len(got), got)
	}
	if ents, _ := os.ReadDir(moved); len(ents) != 2 {
		t.Errorf("files: %v, want console.log and console.log.1", ents)
	}
}
