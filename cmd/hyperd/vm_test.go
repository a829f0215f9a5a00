package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"256M", 256, true}, {"256m", 256, true}, {"1G", 1024, true}, {"512", 512, true},
		{"1048576K", 1024, true}, {"1000K", 0, false}, {"0", 0, false}, {"-1M", 0, false},
		{"lots", 0, false}, {"", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestVMCommandRejects(t *testing.T) {
	for _, args := range [][]string{
		{}, {"start"}, {"run"}, {"run", "--kernel", "/nonexistent/vmlinux"},
		{"run", "--kernel", "k", "--mem", "huge"}, {"run", "--kernel", "k", "--disk", "/nonexistent,ro"},
		{"run", "--kernel", "k", "--disk", "x,fast"},
	} {
		if rc := vmCommand(args); rc != 2 {
			t.Errorf("vm %v exited %d, want 2", args, rc)
		}
	}
}

// TestVMConsoleLogFlags: with --console-log the VM process's messages go
// to that file (a VM that cannot start says why there, where the kvm
// driver reads it), and a cap too small is bad usage.
func TestVMConsoleLogFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in the console log
	}{
		{"setup error in the log", []string{"--kernel", "/nonexistent/vmlinux"}, "hyperd vm run: "},
		{"cap too small", []string{"--kernel", "/nonexistent/vmlinux", "--console-max", "100"}, ""},
	} {
		p := filepath.Join(t.TempDir(), "console.log")
		if rc := vmCommand(append([]string{"run", "--console-log", p}, tc.args...)); rc != 2 {
			t.Errorf("%s: exited %d, want 2", tc.name, rc)
		}
		b, _ := os.ReadFile(p)
		if tc.want == "" && len(b) != 0 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: console log %q, want %q", tc.name, b, tc.want)
		}
	}
}
