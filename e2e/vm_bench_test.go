package e2e

import (
	"bufio"
	"fmt"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/guest/guesttest"
)

// VM-level benchmarks, our VMM (`hyperd vm run`) against QEMU microvm with
// KVM on the same guest: a tiny PVH kernel (guest/guesttest) that writes
// one line to COM1 and halts. It isolates what the VMM itself costs: the
// time from spawning the VM process to the guest's first console byte, the
// host memory the VMM process holds beyond the guest RAM the guest touched,
// and how many 128 MiB VMs fit before starting one takes twice as long.
// They run on any KVM, software-nested included (a Linux boot does not).

const vmMemMiB = 128

type vmmPeer struct {
	name string
	cmd  func(kernel string) *exec.Cmd
}

func vmmPeers(b *testing.B) []vmmPeer {
	kvmtest.Need(b)
	bin := binaries(b)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Fatalf("qemu-system-x86_64 is the peer: %v", err)
	}
	mem := strconv.Itoa(vmMemMiB)
	return []vmmPeer{
		{"hyperd", func(k string) *exec.Cmd {
			return exec.Command(filepath.Join(bin, "hyperd"), "vm", "run", "--kernel", k, "--mem", mem+"M", "--cpus", "1")
		}},
		{"qemu", func(k string) *exec.Cmd {
			return exec.Command(qemu, "-M", "microvm", "-enable-kvm", "-cpu", "max,-arch-capabilities", "-m", mem, "-smp", "1",
				"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", k)
		}},
	}
}

func tinyKernel(b *testing.B) (string, string) {
	const line = "guest up"
	k := filepath.Join(b.TempDir(), "tiny")
	if err := os.WriteFile(k, guesttest.Kernel(line+"\n", guesttest.Halt), 0o644); err != nil {
		b.Fatal(err)
	}
	return k, line
}

type runningVM struct {
	cmd *exec.Cmd
}

func (v *runningVM) kill() {
	v.cmd.Process.Kill()
	v.cmd.Wait()
}

// startVM spawns a VM and returns once its console printed line.
func startVM(b *testing.B, p vmmPeer, kernel, line string) (*runningVM, time.Duration) {
	cmd := p.cmd(kernel)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = io.Discard
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	got := make(chan error, 1)
	go func() {
		r := bufio.NewReader(out)
		for {
			l, err := r.ReadString('\n')
			if strings.Contains(l, line) {
				got <- nil
				io.Copy(io.Discard, r)
				return
			}
			if err != nil {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatalf("%s: no console line: %v", p.name, err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatalf("%s: no console line in 30s", p.name)
	}
	return &runningVM{cmd: cmd}, time.Since(t0)
}

// vmmOverhead is a VM process's RSS minus the resident part of its guest
// RAM mapping (the anonymous mapping of the guest's size, from smaps).
func vmmOverhead(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	var total, guest, size, rss int64
	flush := func() {
		if size >= vmMemMiB<<20 && size <= (vmMemMiB+4)<<20 && rss > guest {
			guest = rss
		}
		size, rss = 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Size:":
			flush()
			size = n << 10
		case "Rss:":
			rss = n << 10
			total += rss
		}
	}
	flush()
	return total - guest, nil
}

func BenchmarkVMStart(b *testing.B) {
	kernel, line := tinyKernel(b)
	start, over := map[string]time.Duration{}, map[string]int64{}
	for _, p := range vmmPeers(b) {
		b.Run(p.name, func(b *testing.B) {
			var total time.Duration
			var overSum int64
			for i := 0; i < b.N; i++ {
				vm, took := startVM(b, p, kernel, line)
				total += took
				time.Sleep(200 * time.Millisecond) // settled
				o, err := vmmOverhead(vm.cmd.Process.Pid)
				vm.kill()
				if err != nil {
					b.Fatal(err)
				}
				overSum += o
			}
			start[p.name] = total / time.Duration(b.N)
			over[p.name] = overSum / int64(b.N)
			b.ReportMetric(float64(start[p.name].Microseconds())/1000, "ms/first-byte")
			b.ReportMetric(float64(over[p.name])/(1<<20), "MiB-vmm-rss")
		})
	}
	if start["qemu"] > 0 && start["hyperd"] > 0 {
		fmt.Printf("VM process spawn -> first guest console byte: hyperd %v, qemu microvm %v, hyperd/qemu = %.2f\n",
			start["hyperd"], start["qemu"], float64(start["hyperd"])/float64(start["qemu"]))
		fmt.Printf("VMM RSS beyond touched guest RAM: hyperd %.1f MiB, qemu microvm %.1f MiB, hyperd/qemu = %.2f\n",
			float64(over["hyperd"])/(1<<20), float64(over["qemu"])/(1<<20), float64(over["hyperd"])/float64(over["qemu"]))
	}
}

// BenchmarkVMDensity starts idle 128 MiB VMs (the tiny kernel, halted)
// until starting one takes twice as long as the first ones (median of 3),
// MemAvailable drops below 1 GiB, or 1000 VMs (see density); it prints N per VMM.
func BenchmarkVMDensity(b *testing.B) {
	kernel, line := tinyKernel(b)
	for _, p := range vmmPeers(b) {
		b.Run(p.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var vms []*runningVM
				n, summary := density(1000, func(int) (time.Duration, error) {
					vm, took := startVM(b, p, kernel, line)
					vms = append(vms, vm)
					return took, nil
				})
				fmt.Printf("VM density %s: %d idle %d MiB VMs: %s\n", p.name, n, vmMemMiB, summary)
				b.ReportMetric(float64(n), "VMs")
				for _, vm := range vms {
					vm.cmd.Process.Signal(syscall.SIGKILL)
				}
				for _, vm := range vms {
					vm.cmd.Wait()
				}
			}
		})
	}
}
