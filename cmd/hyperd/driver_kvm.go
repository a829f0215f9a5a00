package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
)

// buildDir is where `make kernel` leaves vmlinux and modules/: <repo>/build
// next to <repo>/bin/hyperd.
func buildDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "build"
	}
	return filepath.Join(filepath.Dir(filepath.Dir(exe)), "build")
}

func init() {
	driverFactories["kvm"] = func(o Options, log *slog.Logger) (sandbox.Driver, error) {
		kernel := o.Kernel
		if kernel == "" {
			kernel = filepath.Join(buildDir(), "vmlinux")
		}
		if _, err := os.Stat(kernel); err != nil {
			return nil, fmt.Errorf("kvm driver: no guest kernel (%v): pass --kernel or run make kernel", err)
		}
		initrd := o.Initrd
		if initrd == "" {
			// the agent initramfs, built from the hyper-agent next to hyperd
			// (and the guest modules of make kernel), cached under the data root
			opt := initramfs.Options{AgentPath: agentPath(), CacheDir: filepath.Join(o.DataRoot, "initramfs")}
			if _, err := os.Stat(opt.AgentPath); err != nil {
				return nil, errors.New("kvm driver: no --initrd and no hyper-agent binary next to hyperd to build one")
			}
			if m := filepath.Join(filepath.Dir(kernel), "modules"); dirExists(m) {
				opt.ModulesDir = m
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			p, err := initramfs.Build(ctx, opt)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("kvm driver: building the agent initramfs: %w", err)
			}
			initrd = p
		}
		log.Info("kvm sandbox driver", "kernel", kernel, "initrd", initrd)
		return &kvmdrv.Driver{Kernel: kernel, Initrd: initrd, DefaultVCPU: o.VCPU, DefaultMemMiB: o.Memory,
			BootTimeout: time.Duration(o.BootTimeoutSecond) * time.Second, BootRetries: o.BootRetries, Log: log, Jail: o.driverJail(),
			Connect: func(ctx context.Context, dial kvmdrv.Dialer) (sandbox.Agent, error) {
				return client.New(ctx, client.Dialer(dial))
			}}, nil
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
