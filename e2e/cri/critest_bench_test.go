package cri

// BenchmarkCritest (make bench): critest -benchmark, cri-tools' own
// pod and container life cycle benchmarks, against hyperd with the driver
// of $HYPERD_E2E_DRIVER (local in make bench's host run, kvm in its nested
// run, scripts/bench-nested.sh), set up as TestCritest is. Each of b.N
// iterations runs $HYPERD_CRITEST_BENCH_N (default 10) pods and as many
// containers (each in a sandbox of its own), one at a time; the metrics
// are the medians of each CRI call in ms, from critest's result files.
// The same pod life cycle through hyperd's REST API is
// BenchmarkCRIOverhead's.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// critestResults is the part of cri-tools' LifecycleBenchmarksResultsSet
// (pkg/benchmark) read here.
type critestResults struct {
	OperationsNames []string `json:"operationsNames"`
	Datapoints      []struct {
		OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
	} `json:"datapoints"`
}

// medians are the median durations in ms of each operation in a result
// file, by name, and the names in the file's order.
func medians(path string) (map[string]float64, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var r critestResults
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]float64{}
	for i, op := range r.OperationsNames {
		var ds []int64
		for _, p := range r.Datapoints {
			if i < len(p.OperationsDurationsNs) {
				ds = append(ds, p.OperationsDurationsNs[i])
			}
		}
		if len(ds) == 0 {
			return nil, nil, fmt.Errorf("%s: no datapoints for %s", path, op)
		}
		slices.Sort(ds)
		out[op] = float64(ds[len(ds)/2]) / 1e6
	}
	return out, r.OperationsNames, nil
}

func BenchmarkCritest(b *testing.B) {
	requireRoot(b)
	critest := critestPath(b)
	n := 10
	if s := os.Getenv("HYPERD_CRITEST_BENCH_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("HYPERD_CRITEST_BENCH_N %q: want a count", s)
		}
	}
	driver := suiteDriver()
	ns, h := critestHyperd(b, driver)
	dir := b.TempDir()
	params := filepath.Join(dir, "params.yaml")
	if err := os.WriteFile(params, fmt.Appendf(nil, "podsNumber: %d\ncontainersNumber: %d\n", n, n), 0o644); err != nil {
		b.Fatal(err)
	}
	sums := map[string]float64{}
	var ops []string
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, strconv.Itoa(i))
		os.MkdirAll(out, 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
		cmd := exec.CommandContext(ctx, critest, "--runtime-endpoint", "unix://"+h.criSock, "--image-endpoint", "unix://"+h.criSock,
			"--benchmark", "--benchmarking-params-file", params, "--benchmarking-output-dir", out,
			"--ginkgo.no-color", "--ginkgo.focus", "lifecycle of PodSandbox|basic operations on Container")
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		cmd.Dir = dir
		err := startIn(ns, cmd)
		if err == nil {
			err = cmd.Wait()
		}
		cancel()
		if err != nil {
			b.Fatalf("critest -benchmark: %v\n%s\nhyperd log:\n%s", err, tail(log.String(), 20000), h.log())
		}
		for _, f := range []string{"pod_benchmark_data.json", "container_benchmark_data.json"} {
			m, names, err := medians(filepath.Join(out, f))
			if err != nil {
				b.Fatalf("critest -benchmark: %v\n%s", err, tail(log.String(), 5000))
			}
			for _, op := range names {
				if _, ok := sums[op]; !ok {
					ops = append(ops, op)
				}
				sums[op] += m[op]
			}
		}
	}
	var line []string
	for _, op := range ops {
		v := sums[op] / float64(b.N)
		b.ReportMetric(v, op+"-ms")
		line = append(line, fmt.Sprintf("%s %.1f ms", op, v))
	}
	fmt.Printf("critest %s -benchmark, hyperd --driver %s, %d pods and %d containers one at a time, medians: %s (%s)\n",
		CritestVersion, driver, n, n, strings.Join(line, ", "), time.Now().UTC().Format("2006-01-02"))
}
