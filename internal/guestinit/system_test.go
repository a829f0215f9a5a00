// system_test.go tests OnlineCPUs on a made-up sysfs tree and
// ModuleParams; LoadModules needs a kernel to load into and runs in the
// guests that use it (vmm TestBootLinux, the nested runner).
package guestinit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOnlineCPUs(t *testing.T) {
	sys := t.TempDir()
	cpu := func(n, state string) string {
		d := filepath.Join(sys, "devices/system/cpu", n)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if state != "" {
			if err := os.WriteFile(filepath.Join(d, "online"), []byte(state+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(d, "online")
	}
	cpu("cpu0", "") // the boot CPU has no online file
	off1, off3 := cpu("cpu1", "0"), cpu("cpu3", "0")
	on2 := cpu("cpu2", "1")
	n, err := OnlineCPUs(sys)
	if err != nil || n != 2 {
		t.Fatalf("OnlineCPUs = %d, %v; want 2, nil", n, err)
	}
	for _, p := range []string{off1, off3, on2} {
		if b, _ := os.ReadFile(p); string(b) != "1" && string(b) != "1\n" {
			t.Errorf("%s = %q, want 1", p, b)
		}
	}
	if n, err := OnlineCPUs(sys); err != nil || n != 0 {
		t.Errorf("second OnlineCPUs = %d, %v; want 0, nil", n, err)
	}
}

func TestLoadModulesNoOrder(t *testing.T) {
	if err := LoadModules(t.TempDir(), nil); !os.IsNotExist(err) {
		t.Errorf("LoadModules without an order file = %v, want not-exist", err)
	}
}

func TestModuleParams(t *testing.T) {
	for _, c := range []struct{ cmdline, mod, want string }{
		{"console=ttyS0 kvm_amd.npt=0", "kvm_amd", "npt=0"},
		{"kvm-amd.npt=0 kvm_amd.nested=1", "kvm_amd", "npt=0 nested=1"},
		{"kvm_amd.npt=0", "kvm", ""},
		{"kvm.ignore_msrs=1 kvm_amd.npt=0", "kvm", "ignore_msrs=1"},
		{"kvm_amd. kvm_amd", "kvm_amd", ""},
		{"", "kvm_amd", ""},
	} {
		if got := ModuleParams(c.cmdline, c.mod); got != c.want {
			t.Errorf("ModuleParams(%q, %q) = %q, want %q", c.cmdline, c.mod, got, c.want)
		}
	}
}
