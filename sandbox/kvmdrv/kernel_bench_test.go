// This file owns the guest-kernel benchmark: hyperd's own kernel against
// the Debian cloud kernel, on our VMM, in one run.
package kvmdrv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/initramfs"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"github.com/hyperhq/hyperd-go/internal/testbin"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// guestKernel is one kernel under comparison and the initramfs hyperd
// builds for it: the agent, plus the modules next to the kernel if any.
type guestKernel struct {
	name, kernel, initrd string
	initrdBytes          int64
}

func guestKernels(b *testing.B) []guestKernel {
	kvmtest.Need(b)
	agent := testbin.Build(b, "./cmd/hyper-agent")
	cache := b.TempDir()
	var ks []guestKernel
	for _, k := range []struct{ name, path string }{
		{"own", filepath.Join(repoRoot(), "build", "guest", "vmlinux")},
		{"debian", filepath.Join(repoRoot(), "build", "vmlinux")},
	} {
		if _, err := os.Stat(k.path); err != nil {
			b.Fatalf("%s kernel: %v (run make kernel)", k.name, err)
		}
		opt := initramfs.Options{AgentPath: agent, CacheDir: cache, Zstd: true} // as hyperd builds it for make kernel's kernels
		if m := filepath.Join(filepath.Dir(k.path), "modules"); dirOK(m) {
			opt.ModulesDir = m
		}
		p, err := initramfs.Build(context.Background(), opt)
		if err != nil {
			b.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		ks = append(ks, guestKernel{k.name, k.path, p, st.Size()})
	}
	return ks
}

func dirOK(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// BenchmarkGuestKernel boots a 1-vCPU, 128 MiB pod VM with each kernel
// and reports, per kernel: the time from spawning the VM process to a
// connected agent (the driver's Create), the initramfs size, the guest
// memory in use once the agent answered (MemTotal - MemAvailable, from the
// agent) and the VM process's RSS (VMM + the guest RAM it touched). The
// ratios own/debian come from the same run. Boots run alternately, so a
// noisy neighbour hits both kernels alike.
func BenchmarkGuestKernel(b *testing.B) {
	ks := guestKernels(b)
	hyperd := testbin.Build(b, "./cmd/hyperd")
	type sums struct {
		boot         time.Duration
		used, rss, n float64
	}
	res := make([]sums, len(ks))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, k := range ks {
			boot, used, rss := bootOnce(b, hyperd, k, i)
			res[j].boot += boot
			res[j].used += float64(used)
			res[j].rss += float64(rss)
			res[j].n++
		}
	}
	b.StopTimer()
	for j, k := range ks {
		n := res[j].n
		b.ReportMetric(float64(res[j].boot.Milliseconds())/n, k.name+"-agent-ready-ms")
		b.ReportMetric(float64(k.initrdBytes)/1024, k.name+"-initramfs-KiB")
		b.ReportMetric(res[j].used/n/(1<<20), k.name+"-guest-used-MiB")
		b.ReportMetric(res[j].rss/n/(1<<20), k.name+"-vm-rss-MiB")
	}
	if len(ks) == 2 && res[1].boot > 0 && res[1].used > 0 && res[1].rss > 0 {
		b.ReportMetric(float64(res[0].boot)/float64(res[1].boot), "agent-ready-own/debian")
		b.ReportMetric(float64(ks[0].initrdBytes)/float64(ks[1].initrdBytes), "initramfs-own/debian")
		b.ReportMetric(res[0].used/res[1].used, "guest-used-own/debian")
		b.ReportMetric(res[0].rss/res[1].rss, "vm-rss-own/debian")
	}
}

// bootOnce boots k to a connected agent and returns how long that took,
// the guest memory in use and the VM process's RSS, then stops the VM.
func bootOnce(b *testing.B, hyperd string, k guestKernel, i int) (time.Duration, uint64, uint64) {
	d := &Driver{Hyperd: hyperd, Kernel: k.kernel, Initrd: k.initrd, BootTimeout: 3 * time.Minute,
		Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
			return client.New(ctx, client.Dialer(dial))
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	id := fmt.Sprintf("bench-%s-%d", k.name, i)
	t0 := time.Now()
	s, err := d.Create(ctx, sandbox.Config{ID: id, Hostname: id, VCPU: 1, MemoryMiB: 128, StateDir: filepath.Join(b.TempDir(), id)})
	boot := time.Since(t0)
	if err != nil {
		b.Fatalf("%s kernel: %v", k.name, err)
	}
	defer s.Stop(context.Background())
	st, err := s.Agent().Stats(ctx)
	if err != nil {
		b.Fatalf("%s kernel: stats: %v", k.name, err)
	}
	if st.MemAvailable == 0 || st.MemAvailable > st.MemTotal {
		b.Fatalf("%s kernel: the agent reports MemAvailable %d of MemTotal %d", k.name, st.MemAvailable, st.MemTotal)
	}
	hs, err := s.HostStats()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s kernel: agent ready in %v, guest uses %d KiB of %d KiB, VM process RSS %d KiB", k.name,
		boot.Round(time.Millisecond), (st.MemTotal-st.MemAvailable)>>10, st.MemTotal>>10, hs.RSSBytes>>10)
	return boot, st.MemTotal - st.MemAvailable, hs.RSSBytes
}
