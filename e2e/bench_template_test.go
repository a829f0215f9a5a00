// This file benchmarks VM templates (kvm driver): pod VMs restored from a
// template against pod VMs booted cold, measured in one run on the same
// host (in the nested runner's L1 where the host has no vmx/svm): pod
// create+start to the first stdout byte, and the host memory an idle pod
// VM costs (the proportional set size of its VM process: pages shared
// with other VMs restored from the same template count for their share).

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pss is the proportional set size of a process in bytes
// (/proc/pid/smaps_rollup).
func pss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no Pss in smaps_rollup of %d", pid)
}

// BenchmarkTemplate: restored vs cold pod VMs, alternating so both see the
// same host load. The first restored pod (which builds the template) is
// not counted.
func BenchmarkTemplate(b *testing.B) {
	const idle = 4 // idle pods per mode for the memory figure
	// benchDaemon's kvm has templates on (the default), kvm-cold off
	modes := []struct{ name, driver string }{{"cold", "kvm-cold"}, {"template", "kvm"}}
	ds := map[string]*daemon{}
	for _, m := range modes {
		d, stop := benchDaemon(b, m.driver)
		defer stop()
		ds[m.name] = d
	}
	ctx := context.Background()
	// warm-up: the template is built by the first pod of its size
	firstByte(b, ds["template"], "warm", "kvm")
	if boot := podBoot(b, ds["template"], "warm"); !strings.HasPrefix(boot, "template ") {
		b.Fatalf("the warm-up pod booted %q, not from a template:\n%s", boot, ds["template"].log())
	}
	ds["template"].c.RemovePod(ctx, "warm")

	times := map[string][]time.Duration{}
	for i := 0; i < b.N; i++ {
		for _, m := range modes {
			id := fmt.Sprintf("fb%d", i)
			times[m.name] = append(times[m.name], firstByte(b, ds[m.name], id, "kvm"))
			ds[m.name].c.RemovePod(ctx, id)
		}
	}
	cold, tmpl := median(times["cold"]), median(times["template"])
	fmt.Printf("template: pod create+start -> first stdout byte: cold %v, restored %v, cold/restored = %.1fx (median of %d each)\n",
		cold, tmpl, float64(cold)/float64(tmpl), b.N)
	b.ReportMetric(float64(cold)/float64(tmpl), "x-faster")
	// the VM's part of it: VM process start -> agent set up (the driver's
	// "pod VM ready" line), the rest being the container's start in it
	vmCold, vmTmpl := median(vmReady(ds["cold"], "fb")), median(vmReady(ds["template"], "fb"))
	if vmCold > 0 && vmTmpl > 0 {
		fmt.Printf("template: pod VM start -> agent set up: booted %v, restored %v, booted/restored = %.1fx\n",
			vmCold, vmTmpl, float64(vmCold)/float64(vmTmpl))
	}

	memOf := map[string]float64{}
	for _, m := range modes {
		d := ds[m.name]
		var ids []string
		for k := 0; k < idle; k++ {
			id := fmt.Sprintf("%s-idle%d", m.name, k) // unique: vmProcs matches it
			if _, err := d.c.CreatePod(ctx, []byte(`{"id":"`+id+`","resource":{"vcpu":1,"memory":128},"containers":[{"image":"busybox:latest","command":["sleep","100000"]}]}`)); err != nil {
				b.Fatal(err)
			}
			if err := d.c.StartPod(ctx, id); err != nil {
				b.Fatalf("%s: start %s: %v", m.name, id, err)
			}
			ids = append(ids, id)
		}
		time.Sleep(slow(2 * time.Second)) // let the guests settle
		var total int64
		for _, id := range ids {
			procs := vmProcs(id)
			if len(procs) != 1 {
				b.Fatalf("%d VM processes for %s", len(procs), id)
			}
			for pid := range procs {
				p, err := pss(pid)
				if err != nil {
					b.Fatal(err)
				}
				total += p
			}
		}
		memOf[m.name] = float64(total) / idle / (1 << 20)
		for _, id := range ids {
			d.c.RemovePod(ctx, id)
		}
	}
	fmt.Printf("template: host memory (PSS) per idle 128 MiB pod VM: cold %.1f MiB, restored %.1f MiB, restored/cold = %.2f (%d idle pods each)\n",
		memOf["cold"], memOf["template"], memOf["template"]/memOf["cold"], idle)
	b.ReportMetric(memOf["template"]/memOf["cold"], "mem-ratio")
}

var vmReadyLine = regexp.MustCompile(`msg="pod VM ready" pod=(\S+) how=\S+ took=(\S+)`)

// vmReady returns the VM start times the kvm driver logged for pods whose
// id starts with prefix.
func vmReady(d *daemon, prefix string) []time.Duration {
	b, _ := os.ReadFile(d.logf)
	var out []time.Duration
	for _, m := range vmReadyLine.FindAllStringSubmatch(string(b), -1) {
		if !strings.HasPrefix(m[1], prefix) {
			continue
		}
		if t, err := time.ParseDuration(m[2]); err == nil {
			out = append(out, t)
		}
	}
	return out
}
