// system.go owns what an init program does to the kernel it runs on:
// bringing offline CPUs online (OnlineCPUs) and loading the modules an
// order file lists (LoadModules), with their parameters taken from the
// kernel command line as modprobe would (ModuleParams).
package guestinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OnlineCPUs writes 1 to every sys/devices/system/cpu/cpuN/online that
// reads 0 (sys is where sysfs is mounted, "/sys") and returns how many CPUs
// it brought online. It goes on past a CPU that refuses and returns every
// refusal.
func OnlineCPUs(sys string) (int, error) {
	ents, err := filepath.Glob(filepath.Join(sys, "devices/system/cpu/cpu[0-9]*/online"))
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, p := range ents {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("online %s: %w", filepath.Dir(p), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// LoadModules loads the modules dir/order names, one a line, in that
// order, from dir (blank lines and lines starting with # are skipped; a
// name is taken as a file name in dir), each with the parameters params
// gives for its name without ".ko" (nil: none). A module already loaded or
// built in is no error. It goes on past a module that fails and returns
// every failure; a missing order file is an error.
func LoadModules(dir string, params func(mod string) string) error {
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(string(order), "\n") {
		name := strings.TrimSpace(line)
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		name = filepath.Base(name)
		p := ""
		if params != nil {
			p = params(strings.TrimSuffix(name, ".ko"))
		}
		if err := loadModule(filepath.Join(dir, name), p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && err != unix.EEXIST {
		if params != "" {
			return fmt.Errorf("finit_module %s %s: %w", filepath.Base(path), params, err)
		}
		return fmt.Errorf("finit_module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// ModuleParams picks the parameters for module mod out of a kernel command
// line, as modprobe does for loadable modules: "kvm_amd.npt=0" gives
// kvm_amd "npt=0". Dashes and underscores in a module name are one.
func ModuleParams(cmdline, mod string) string {
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	var out []string
	for _, f := range strings.Fields(cmdline) {
		name, param, ok := strings.Cut(f, ".")
		if !ok || param == "" || norm(name) != norm(mod) {
			continue
		}
		out = append(out, param)
	}
	return strings.Join(out, " ")
}
