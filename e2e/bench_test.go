package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Pod-level benchmarks (make bench, tier 7): the same operations through a
// real hyperd with each sandbox driver, reported side by side so the ratio
// kvm/local comes from one run. Where the host cannot boot a guest (no
// vmx/svm) the kvm half reports why it did not run; vmm's BenchmarkBoot
// compares our VMM with QEMU on the same kernel+initramfs there.

// benchDaemon starts hyperd with driver and loads the busybox image.
// "kvm-cold" is the kvm driver with VM templates off (every pod VM boots).
func benchDaemon(b *testing.B, driver string) (*daemon, func()) {
	var extra []string
	if driver == "kvm-cold" {
		driver, extra = "kvm", []string{"--vm-template=false"}
	}
	if driver == "kvm" && !hardwareVirt() {
		b.Skip("kvm: not run here: no vmx/svm (software-nested KVM cannot boot a guest); see vmm BenchmarkBoot for the VMM-vs-QEMU boot ratio")
	}
	bin := binaries(b)
	tmp := b.TempDir()
	d := startDaemon(b, bin, filepath.Join(tmp, "root"), filepath.Join(tmp, "hyper.sock"), driver, append(driverFlags(b, driver), extra...)...)
	d.loadBusybox()
	return d, func() { d.signal(syscall.SIGTERM) }
}

// firstByte creates and starts a pod running `echo hi` and returns the time
// from the create request to the first byte of the container's stdout.
func firstByte(b *testing.B, d *daemon, id, driver string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := d.c.CreatePod(ctx, []byte(`{"id":"`+id+`","resource":{"vcpu":1,"memory":128},"containers":[{"name":"`+id+`","image":"busybox:latest","command":["echo","hi"]}]}`)); err != nil {
		b.Fatalf("create: %v", err)
	}
	if err := d.c.StartPod(ctx, id); err != nil {
		b.Fatalf("%s start: %v\n%s", driver, err, d.log())
	}
	resp, err := d.c.Do(ctx, "GET", "/container/logs", url.Values{"container": {id}, "stdout": {"1"}, "follow": {"1"}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	var hdr [9]byte // one Docker frame header + the first byte
	_, err = io.ReadFull(resp.Body, hdr[:])
	took := time.Since(t0)
	resp.Body.Close()
	if err != nil || hdr[0] != 1 || hdr[8] != 'h' {
		b.Fatalf("first byte of stdout: %q %v", hdr, err)
	}
	return took
}

func BenchmarkPodFirstByte(b *testing.B) {
	res := map[string]time.Duration{}
	for _, driver := range []string{"local", "kvm"} {
		b.Run(driver, func(b *testing.B) {
			d, stop := benchDaemon(b, driver)
			defer stop()
			var total time.Duration
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("fb%d", i)
				total += firstByte(b, d, id, driver)
				d.c.RemovePod(context.Background(), id)
			}
			res[driver] = total / time.Duration(b.N)
			b.ReportMetric(float64(res[driver].Microseconds())/1000, "ms/first-byte")
		})
	}
	ratio("pod create+start -> first stdout byte", res)
}

func BenchmarkExecRoundTrip(b *testing.B) {
	res := map[string]time.Duration{}
	for _, driver := range []string{"local", "kvm"} {
		b.Run(driver, func(b *testing.B) {
			d, stop := benchDaemon(b, driver)
			defer stop()
			ctx := context.Background()
			if _, err := d.c.CreatePod(ctx, []byte(`{"id":"ex","containers":[{"name":"ex","image":"busybox:latest","command":["sleep","100000"]}]}`)); err != nil {
				b.Fatal(err)
			}
			if err := d.c.StartPod(ctx, "ex"); err != nil {
				b.Fatalf("start: %v", err)
			}
			defer d.c.RemovePod(ctx, "ex")
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				eid, err := d.c.ExecCreate(ctx, "ex", []string{"true"}, false)
				if err != nil {
					b.Fatal(err)
				}
				s, err := d.c.ExecStart(ctx, "ex", eid)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, s.Reader)
				s.Conn.Close()
				if code, err := d.c.ExitCode(ctx, "ex", eid); err != nil || code != 0 {
					b.Fatalf("exec true: %d %v", code, err)
				}
			}
			res[driver] = time.Since(t0) / time.Duration(b.N)
			b.ReportMetric(float64(res[driver].Microseconds())/1000, "ms/exec")
		})
	}
	ratio("exec /bin/true round trip (create+start+exit code)", res)
}

// BenchmarkDensity starts idle 128 MiB pods until the start time doubles
// (median of the last 3 against the first 3), memory runs low (MemAvailable
// < 1 GiB) or 1000 pods, and reports N and the host memory each pod cost;
// kvm with VM templates (the default) and without (kvm-cold).
func BenchmarkDensity(b *testing.B) {
	for _, driver := range []string{"local", "kvm", "kvm-cold"} {
		b.Run(driver, func(b *testing.B) {
			d, stop := benchDaemon(b, driver)
			defer stop()
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				var ids []string
				n, summary := density(1000, func(k int) (time.Duration, error) {
					id := fmt.Sprintf("den%d-%d", i, k)
					t0 := time.Now()
					if _, err := d.c.CreatePod(ctx, []byte(`{"id":"`+id+`","resource":{"vcpu":1,"memory":128},"containers":[{"image":"busybox:latest","command":["sleep","100000"]}]}`)); err != nil {
						b.Fatal(err)
					}
					ids = append(ids, id)
					err := d.c.StartPod(ctx, id)
					return time.Since(t0), err
				})
				fmt.Printf("density %s: %d idle pods: %s\n", driver, n, summary)
				b.ReportMetric(float64(n), "pods")
				for _, id := range ids {
					d.c.RemovePod(ctx, id)
				}
			}
		})
	}
}

// density starts one more sandbox with start(k) until starting one takes
// twice as long as the first ones (median of the last 3 against the first
// 3), MemAvailable drops below 1 GiB, a start fails, or limit; it returns
// how many started and a summary with the reason and the memory each cost.
func density(limit int, start func(k int) (time.Duration, error)) (int, string) {
	mem0 := memAvailable()
	var times []time.Duration
	why := fmt.Sprintf("the cap of %d", limit)
	for len(times) < limit {
		took, err := start(len(times))
		if err != nil {
			why = "a start failed: " + err.Error()
			break
		}
		times = append(times, took)
		if len(times) >= 6 && median(times[len(times)-3:]) > 2*median(times[:3]) {
			why = "start time doubled"
			break
		}
		if memAvailable() < 1<<30 {
			why = "MemAvailable < 1 GiB"
			break
		}
	}
	if len(times) == 0 {
		return 0, why
	}
	used := mem0 - memAvailable()
	return len(times), fmt.Sprintf("stopped at %s; first start %v, last %v; host memory %.1f MiB each",
		why, median(times[:min(3, len(times))]), times[len(times)-1], float64(used)/float64(len(times))/(1<<20))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func memAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func ratio(what string, res map[string]time.Duration) {
	l, k := res["local"], res["kvm"]
	switch {
	case l > 0 && k > 0:
		fmt.Printf("%s: kvm %v, local %v, kvm/local = %.2f\n", what, k, l, float64(k)/float64(l))
	case l > 0:
		fmt.Printf("%s: local %v; kvm not run on this host (no vmx/svm)\n", what, l)
	}
}
