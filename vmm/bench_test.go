package vmm

import (
	"bufio"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/kvm"
)

// rssBytes is this process's resident set size.
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// residentBytes counts the pages of mem that are resident (mincore(2)).
func residentBytes(mem []byte) uint64 {
	if len(mem) == 0 {
		return 0
	}
	page := os.Getpagesize()
	vec := make([]byte, (len(mem)+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0
	}
	var n uint64
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * uint64(page)
}

// BenchmarkBoot boots the same kernel, initramfs and command line under
// qemu-system-x86_64 -M microvm -enable-kvm and under our VMM, one after
// the other in the same run, and reports the time each needs to reach the
// last milestone both reach (on hardware KVM: the test init's poweroff
// request; on software-nested KVM: the furthest QEMU gets) and their
// ratio, plus our VMM's resident memory beyond the guest memory the guest
// actually touched.
func BenchmarkBoot(b *testing.B) {
	kvmtest.Need(b)
	kernel, modules := testKernel(b)
	initrd := buildBootInitramfs(b, modules)
	hw := kvm.HostHasHardwareVirt()
	deadline := bootDeadline(hw)
	const memMiB, cpus = 256, 2
	ms := bootMilestones(cpus, hw)
	for i := 0; i < b.N; i++ {
		qemu := newMilestoneLog(ms, nil)
		if err := qemuBoot(b, kernel, initrd, bootCmdline(hw), memMiB, cpus, deadline, qemu); err != nil && qemu.String() == "" {
			b.Fatalf("qemu: %v", err)
		}
		qidx, qat := qemu.reached()
		if qidx < 0 {
			b.Fatalf("QEMU reached no milestone:\n%s", qemu.tail(20))
		}
		// Our VMM runs until it reaches QEMU's milestone (or the deadline).
		ours := newMilestoneLog(ms, nil)
		rss0 := rssBytes()
		m, err := New(Config{Kernel: kernel, Initrd: initrd, Cmdline: bootCmdline(hw), MemMiB: memMiB, CPUs: cpus, Console: ours})
		if err != nil {
			b.Fatal(err)
		}
		ours.start = time.Now()
		m.Start()
		var peakOverhead int64
		tick := time.NewTicker(100 * time.Millisecond)
		stop := time.After(deadline)
	loop:
		for {
			select {
			case <-m.Done():
				break loop
			case <-stop:
				break loop
			case <-tick.C:
				over := int64(rssBytes()) - int64(rss0) - int64(residentBytes(m.Memory()))
				peakOverhead = max(peakOverhead, over)
				if ours.at(qidx) != 0 {
					break loop
				}
			}
		}
		tick.Stop()
		m.Stop()
		res := m.Wait()
		oat := ours.at(qidx)
		if oat == 0 {
			b.Fatalf("our VMM did not reach %q (QEMU did, at %.2fs): %v\n%s", ms[qidx].name, qat.Seconds(), res, ours.tail(20))
		}
		b.ReportMetric(oat.Seconds(), "vmm-s")
		b.ReportMetric(qat.Seconds(), "qemu-s")
		b.ReportMetric(oat.Seconds()/qat.Seconds(), "vmm/qemu")
		b.ReportMetric(float64(peakOverhead)/(1<<20), "vmm-overhead-MiB")
		b.Logf("milestone %q: our VMM %.2fs, QEMU microvm %.2fs, ratio %.2f; VMM RSS beyond touched guest memory: %.1f MiB",
			ms[qidx].name, oat.Seconds(), qat.Seconds(), oat.Seconds()/qat.Seconds(), float64(peakOverhead)/(1<<20))
	}
}
