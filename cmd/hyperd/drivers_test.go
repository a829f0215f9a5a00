package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/sandbox"
)

type namedDriver struct {
	sandbox.Driver
	name string
}

func (d namedDriver) Name() string { return d.name }

// TestSelectDriverAuto: --driver auto picks local only on a host without
// hardware virtualization; where the host can run VMs and the kvm driver
// cannot start (a missing kernel, say) it is an error, not a silent fall
// back to weaker isolation.
func TestSelectDriverAuto(t *testing.T) {
	saved, savedHW := driverFactories, hardwareVirt
	defer func() { driverFactories, hardwareVirt = saved, savedHW }()
	for _, tc := range []struct {
		name      string
		hw        bool
		kvmErr    error
		noKVM     bool
		want      string // driver name, or "" for an error
		wantInMsg string // in the warning or the error
	}{
		{name: "hardware, kvm starts", hw: true, want: "kvm"},
		{name: "hardware, kvm fails", hw: true, kvmErr: errors.New("no guest kernel"), wantInMsg: "no guest kernel"},
		{name: "hardware, kvm not compiled in", hw: true, noKVM: true, wantInMsg: "not compiled"},
		{name: "no hardware", hw: false, want: "local", wantInMsg: "NOT in virtual machines"},
		{name: "no hardware, kvm would fail", hw: false, kvmErr: errors.New("x"), want: "local", wantInMsg: "NOT in virtual machines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hardwareVirt = func() (bool, string) { return tc.hw, "test host" }
			driverFactories = map[string]func(Options, *slog.Logger) (sandbox.Driver, error){
				"local": func(Options, *slog.Logger) (sandbox.Driver, error) { return namedDriver{name: "local"}, nil },
			}
			if !tc.noKVM {
				driverFactories["kvm"] = func(Options, *slog.Logger) (sandbox.Driver, error) {
					if tc.kvmErr != nil {
						return nil, tc.kvmErr
					}
					return namedDriver{name: "kvm"}, nil
				}
			}
			d, warn, err := selectDriver(Options{Driver: "auto"}, slog.Default())
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got driver %s (warning %q), want an error", d.Name(), warn)
				}
				if !strings.Contains(err.Error(), tc.wantInMsg) {
					t.Fatalf("error %q lacks %q", err, tc.wantInMsg)
				}
				return
			}
			if err != nil || d.Name() != tc.want || !strings.Contains(warn, tc.wantInMsg) {
				t.Fatalf("got %v %q %v, want %s with a warning containing %q", d, warn, err, tc.want, tc.wantInMsg)
			}
		})
	}
}

// TestDefaultKernel: without --kernel the kvm driver boots make kernel's
// own guest kernel, and the Debian cloud kernel only where ours is absent.
func TestDefaultKernel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string // under build/
		want  string
	}{
		{"both", []string{"guest/vmlinux", "vmlinux"}, "guest/vmlinux"},
		{"only ours", []string{"guest/vmlinux"}, "guest/vmlinux"},
		{"only Debian's", []string{"vmlinux"}, "vmlinux"},
		{"ours is a directory", []string{"guest/vmlinux/x", "vmlinux"}, "vmlinux"},
		{"none: the error names Debian's path", nil, "vmlinux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(build, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("ELF"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := defaultKernel(build), filepath.Join(build, tc.want); got != want {
				t.Fatalf("defaultKernel = %s, want %s", got, want)
			}
		})
	}
}

func TestCheckKernelArgs(t *testing.T) {
	for _, tc := range []struct {
		args string
		ok   bool
	}{
		{"", true},
		{"loglevel=7", true},
		{"loglevel=7 printk.time=1 init_on_free=1", true},
		{"quiet\nrdinit=/bin/sh", false},
		{"loglevel=7\x00", false},
		{"hyperd.hostname=evil", false},
		{"x=" + strings.Repeat("a", 1100), false},
	} {
		if err := checkKernelArgs(tc.args); (err == nil) != tc.ok {
			t.Errorf("checkKernelArgs(%q) = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

func TestReadsZstd(t *testing.T) {
	for _, tc := range []struct {
		name, config string // "" = no config file
		want         bool
	}{
		{"make kernel's", "CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n", true},
		{"gzip only", "CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n", false},
		{"modular is not built in", "CONFIG_RD_ZSTD=m\n", false},
		{"no config next to it", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config"), []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := readsZstd(filepath.Join(dir, "vmlinux")); got != tc.want {
				t.Fatalf("readsZstd = %v, want %v", got, tc.want)
			}
		})
	}
}
