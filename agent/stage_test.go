// This file tests staged files: names, bounds and hand-over.
package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

func TestStage(t *testing.T) {
	s := &Server{cfg: Config{StateDir: t.TempDir()}}
	defer func(m int64) { maxStaged = m }(maxStaged)
	maxStaged = 4 << 20
	chunk := make([]byte, protocol.StageChunkMax)
	for _, c := range []struct {
		name string
		ch   protocol.StageChunk
		ok   bool
	}{
		{"first chunk", protocol.StageChunk{Name: "c1.file0", Data: []byte("abc")}, true},
		{"appended", protocol.StageChunk{Name: "c1.file0", Data: []byte("def"), Append: true}, true},
		{"escaping name", protocol.StageChunk{Name: "../escape", Data: []byte("x")}, false},
		{"slash", protocol.StageChunk{Name: "a/b", Data: []byte("x")}, false},
		{"dot-dot", protocol.StageChunk{Name: "..", Data: []byte("x")}, false},
		{"chunk too big", protocol.StageChunk{Name: "c2", Data: append(chunk, 0)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := s.stage(c.ch); (err == nil) != c.ok {
				t.Errorf("stage = %v, want ok %v", err, c.ok)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(s.statePath("staged"), "c1.file0")); string(b) != "abcdef" {
		t.Errorf("staged content %q", b)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.cfg.StateDir), "escape")); err == nil {
		t.Error("a staged name wrote outside the staging directory")
	}
	// the cap counts every staged byte not yet taken
	var err *protocol.Error
	for i := 0; err == nil && i <= int(maxStaged/protocol.StageChunkMax); i++ {
		err = s.stage(protocol.StageChunk{Name: "fill", Data: chunk, Append: i > 0})
	}
	if err == nil {
		t.Fatalf("staged past %d bytes", maxStaged)
	}
	// rewriting a name from scratch frees its old bytes
	if err := s.stage(protocol.StageChunk{Name: "fill", Data: []byte("small")}); err != nil {
		t.Errorf("restaging a name: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "taken")
	if err := s.takeStaged("c1.file0", dst); err != nil {
		t.Fatal(err)
	}
	if err := s.takeStaged("c1.file0", dst); err == nil {
		t.Error("a staged file was taken twice")
	}
	if err := s.takeStaged("never", dst); err == nil {
		t.Error("took a file never staged")
	}
}
