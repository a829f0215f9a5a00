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
		// --net: bad syntax fails before anything is opened; a descriptor
		// that is not open fails at adoption. (No tap=NAME here: as root
		// it would create a tap in the machine's own namespace.)
		{"run", "--kernel", "k", "--net", "tap"}, {"run", "--kernel", "k", "--net", "tap=x,fd=3"},
		{"run", "--kernel", "k", "--net", "tap=x,mtu=9"}, {"run", "--kernel", "/nonexistent/vmlinux", "--net", "fd=1000000"},
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

func TestParseNetFlag(t *testing.T) {
	for _, tc := range []struct {
		in      string
		tap     string
		fd      int
		mac     string
		mtu     int
		wantErr string // substring; "" when valid
	}{
		{in: "tap=hd0", tap: "hd0", fd: -1},
		{in: "tap=hd0,mac=52:54:00:12:34:56,mtu=9000", tap: "hd0", fd: -1, mac: "52:54:00:12:34:56", mtu: 9000},
		{in: "fd=3", fd: 3},
		{in: "mtu=68,fd=17,mac=02:00:00:00:00:01", fd: 17, mac: "02:00:00:00:00:01", mtu: 68},
		{in: "", wantErr: "not key=value"},
		{in: "tap", wantErr: "not key=value"},
		{in: "tap=", wantErr: "not key=value"},
		{in: "tap=a,,mtu=1500", wantErr: "not key=value"},
		{in: "mac=52:54:00:12:34:56", wantErr: "exactly one of tap=NAME and fd=N"},
		{in: "tap=a,fd=3", wantErr: "exactly one"},
		{in: "tap=a,tap=b", wantErr: "given twice"},
		{in: "tap=sixteen-bytes-xy", wantErr: "at most 15 bytes"},
		{in: "tap=a/b", wantErr: "no '/'"},
		{in: "tap=..", wantErr: "tap name"},
		{in: "fd=2", wantErr: ">= 3"},
		{in: "fd=x", wantErr: ">= 3"},
		{in: "tap=a,mac=52:54:00:12:34", wantErr: "six hex bytes"},
		{in: "tap=a,mac=00:00:00:00:00:00:00:00", wantErr: "six hex bytes"},
		{in: "tap=a,mac=01:00:5e:00:00:01", wantErr: "multicast"},
		{in: "tap=a,mac=00:00:00:00:00:00", wantErr: "all zeros"},
		{in: "tap=a,mtu=67", wantErr: "68 to 65535"},
		{in: "tap=a,mtu=65536", wantErr: "68 to 65535"},
		{in: "tap=a,speed=10G", wantErr: "unknown key"},
	} {
		sp, err := parseNetFlag(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--net") {
				t.Errorf("parseNetFlag(%q) = %+v, %v; want an error with %q", tc.in, sp, err, tc.wantErr)
			}
			continue
		}
		if err != nil || sp.tap != tc.tap || sp.fd != tc.fd || sp.mac.String() != tc.mac || sp.mtu != tc.mtu {
			t.Errorf("parseNetFlag(%q) = %+v (mac %s), %v", tc.in, sp, sp.mac, err)
		}
	}
}
