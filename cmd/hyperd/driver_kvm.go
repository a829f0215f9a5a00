package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
)

func init() {
	driverFactories["kvm"] = newKVMDriver
}

// newKVMDriver configures the kvm sandbox driver: the guest kernel from
// --kernel (make kernel leaves it in build/vmlinux, with its modules in
// build/modules), and the agent initramfs from --initrd or, by default,
// built from the hyper-agent binary and those modules (cached by content
// hash under the data root).
func newKVMDriver(o Options, log *slog.Logger) (sandbox.Driver, error) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return nil, fmt.Errorf("kvm driver: %w", err)
	}
	if o.Kernel == "" {
		return nil, errors.New("kvm driver: no guest kernel: pass --kernel (make kernel puts one in build/vmlinux)")
	}
	if _, err := os.Stat(o.Kernel); err != nil {
		return nil, fmt.Errorf("kvm driver: guest kernel: %w", err)
	}
	initrd := o.Initrd
	if initrd == "" {
		agent, err := exec.LookPath(agentPath())
		if err != nil {
			return nil, fmt.Errorf("kvm driver: the hyper-agent binary for the initramfs is neither next to hyperd nor in PATH: %w", err)
		}
		modules := filepath.Join(filepath.Dir(o.Kernel), "modules")
		if _, err := os.Stat(filepath.Join(modules, "order")); err != nil {
			modules = ""
		}
		initrd, err = initramfs.Build(context.Background(), initramfs.Options{
			AgentPath: agent, ModulesDir: modules, CacheDir: filepath.Join(o.DataRoot, "initramfs"),
		})
		if err != nil {
			return nil, fmt.Errorf("kvm driver: building the agent initramfs: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	log.Info("kvm sandbox driver", "kernel", o.Kernel, "initrd", initrd, "vcpu", o.VCPU, "memoryMiB", o.Memory)
	return &kvmdrv.Driver{
		Hyperd: self, Kernel: o.Kernel, Initrd: initrd,
		DefaultVCPU: o.VCPU, DefaultMemMiB: o.Memory,
		Connect: func(ctx context.Context, dial kvmdrv.Dialer) (sandbox.Agent, error) {
			return client.New(ctx, client.Dialer(dial))
		},
	}, nil
}
