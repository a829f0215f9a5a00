package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// driverFactories holds the sandbox drivers compiled into this binary; each
// driver's file registers itself in init().
var driverFactories = map[string]func(o Options, log *slog.Logger) (sandbox.Driver, error){}

// hostHasHardwareVirt reports vmx/svm in /proc/cpuinfo and a usable /dev/kvm.
func hostHasHardwareVirt() (bool, string) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, "cannot read /proc/cpuinfo"
	}
	hw := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flags") {
			for _, f := range strings.Fields(l) {
				if f == "vmx" || f == "svm" {
					hw = true
				}
			}
			break
		}
	}
	if !hw {
		return false, "no vmx/svm flag in /proc/cpuinfo (software-nested or no virtualization): a guest kernel cannot boot here"
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false, "/dev/kvm is missing"
	}
	return true, ""
}

// hardwareVirt is hostHasHardwareVirt; a variable for the tests.
var hardwareVirt = hostHasHardwareVirt

// selectDriver applies --driver. auto picks kvm where the host has hardware
// virtualization, and local, with a loud warning, only where it has none.
// On a host that can run VMs, a kvm driver that cannot start is an error:
// pods never silently lose their VM isolation.
func selectDriver(o Options, log *slog.Logger) (sandbox.Driver, string, error) {
	mk := func(name string) (sandbox.Driver, error) {
		f, ok := driverFactories[name]
		if !ok {
			return nil, fmt.Errorf("the %s sandbox driver is not compiled into this hyperd", name)
		}
		return f(o, log)
	}
	switch o.Driver {
	case "kvm", "local":
		d, err := mk(o.Driver)
		if err != nil {
			return nil, "", err
		}
		warn := ""
		if o.Driver == "local" {
			warn = "sandbox driver is local: pods run as namespaced host processes, NOT in virtual machines (weaker isolation)"
		}
		return d, warn, nil
	}
	if ok, why := hardwareVirt(); !ok {
		d, err := mk("local")
		if err != nil {
			return nil, "", fmt.Errorf("--driver auto: no kvm here (%s) and %v", why, err)
		}
		return d, "--driver auto chose the local driver (" + why + "): pods run as namespaced host processes, NOT in virtual machines", nil
	}
	d, err := mk("kvm")
	if err != nil {
		return nil, "", fmt.Errorf("--driver auto: this host can run VMs but the kvm driver cannot start: %w (fix it, or choose --driver local knowingly)", err)
	}
	return d, "", nil
}

// agentPath finds the hyper-agent binary for the local driver: next to
// hyperd, then in PATH.
func agentPath() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "hyper-agent")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "hyper-agent"
}
