package main

import "testing"

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
