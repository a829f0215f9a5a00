// Tests of how L1.Run reports a command's exit frame: a kernel code patch
// record makes the command an error (CodePatchError) whatever its status.

package nested

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeL1init answers one command connection with stdout "out" and exit.
func fakeL1init(t *testing.T, exit Exit) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return
		}
		WriteFrame(c, FrameStdout, []byte("out"))
		WriteExit(c, exit)
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestRunCodePatches(t *testing.T) {
	trace := "kworker/0:2-47 [000] ..... 18.8: arch_jump_label_transform_apply <-__static_key_slow_dec_cpuslocked.part.0\n => jump_label_update_timeout"
	for _, c := range []struct {
		name     string
		exit     Exit
		wantCode int
		patched  bool
	}{
		{"clean pass", Exit{Code: 0}, 0, false},
		{"clean fail", Exit{Code: 3}, 3, false},
		{"pass with patches", Exit{Code: 0, CodePatches: trace}, 0, true},
		{"fail with patches", Exit{Code: 1, CodePatches: trace}, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := Attach(fakeL1init(t, c.exit), t.TempDir())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out bytes.Buffer
			code, err := l.Run(ctx, Cmd{Argv: []string{"suite.test"}}, &out, &out)
			if code != c.wantCode || out.String() != "out" {
				t.Errorf("code %d output %q, want %d %q", code, out.String(), c.wantCode, "out")
			}
			var pe *CodePatchError
			if got := errors.As(err, &pe); got != c.patched {
				t.Fatalf("err %v: CodePatchError %v, want %v", err, got, c.patched)
			}
			if !c.patched {
				if err != nil {
					t.Fatalf("err %v", err)
				}
				return
			}
			for _, want := range []string{"jump_label_update_timeout", "l1init/keys.go", `"suite.test"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}
