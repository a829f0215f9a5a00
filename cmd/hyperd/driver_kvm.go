package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
)

// buildDir is where `make kernel` leaves its kernels: <repo>/build next to
// <repo>/bin/hyperd.
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
			kernel = defaultKernel(buildDir())
		}
		if _, err := os.Stat(kernel); err != nil {
			return nil, fmt.Errorf("kvm driver: no guest kernel (%v): pass --kernel or run make kernel", err)
		}
		if err := checkKernelArgs(o.KernelArgs); err != nil {
			return nil, err
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
			opt.Zstd = readsZstd(kernel)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			p, err := initramfs.Build(ctx, opt)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("kvm driver: building the agent initramfs: %w", err)
			}
			initrd = p
		}
		log.Info("kvm sandbox driver", "kernel", kernel, "initrd", initrd, "vm-template", o.VMTemplate)
		tmplDir := ""
		if o.VMTemplate {
			tmplDir = filepath.Join(o.DataRoot, "templates")
		}
		return &kvmdrv.Driver{TemplateDir: tmplDir, Kernel: kernel, Initrd: initrd, Cmdline: o.KernelArgs, DefaultVCPU: o.VCPU, DefaultMemMiB: o.Memory,
			BootTimeout: time.Duration(o.BootTimeoutSecond) * time.Second, BootRetries: o.BootRetries, Log: log, Jail: o.driverJail(),
			Connect: func(ctx context.Context, dial kvmdrv.Dialer) (sandbox.Agent, error) {
				return client.New(ctx, client.Dialer(dial))
			}}, nil
	}
}

// checkKernelArgs refuses --kernel-args that would not reach the guest as
// the words given: control characters (a newline ends the command line)
// and hyperd.* words, which hyperd sets per pod.
func checkKernelArgs(s string) error {
	if len(s) > 1024 {
		return fmt.Errorf("--kernel-args: %d bytes, at most 1024", len(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("--kernel-args: control character %q", r)
		}
	}
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "hyperd.") {
			return fmt.Errorf("--kernel-args: %q: hyperd.* words are set by hyperd per pod", w)
		}
	}
	return nil
}

// readsZstd says whether a kernel unpacks a zstd initramfs: its config
// (the "config" file next to it, as make kernel leaves for both of its
// kernels) has CONFIG_RD_ZSTD=y. A kernel of unknown make gets gzip,
// which any kernel reads.
func readsZstd(kernel string) bool {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "config"))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "CONFIG_RD_ZSTD=y" {
			return true
		}
	}
	return false
}

// defaultKernel is the guest kernel hyperd boots without --kernel: the
// project's own (build/guest/vmlinux, everything built in: guest/kernel),
// else the Debian cloud kernel with its modules (build/vmlinux and
// build/modules/), both left by make kernel.
func defaultKernel(build string) string {
	own := filepath.Join(build, "guest", "vmlinux")
	if st, err := os.Stat(own); err == nil && st.Mode().IsRegular() {
		return own
	}
	return filepath.Join(build, "vmlinux")
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
