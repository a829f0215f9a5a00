package cri

// TestCritest runs critest, cri-tools' CRI conformance suite, against
// hyperd with its pod network, every case but the listed skips (each with
// its reason; the README lists them too): --driver local in make test's
// host run, --driver kvm inside the nested runner's L1 (its suite
// e2e-kvm-cri-critest sets HYPERD_E2E_DRIVER). The registry, hyperd and
// critest run in a network namespace of the test's own: pod addresses,
// host ports and the streaming server are reached there.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// critestPath is CritestPath, or the test fails.
func critestPath(t testing.TB) string {
	t.Helper()
	p, err := CritestPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// skip is one critest case (a regular expression over its full name) not
// run, and why.
type skip struct{ what, why string }

// critestSkips are the cases hyperd does not pass, with the reason. Keep
// the README's list ("CRI: critest") in step.
var critestSkips = []skip{
	// what a VM sandbox cannot mean
	{`HostNetwork is true|HostPID|HostIpc is true|portforward in host network`, "host namespaces: a pod's sandbox (its VM) has none to share"},
	{`PodPID`, "a PID namespace shared by a pod's containers: the agent gives each container its own"},
	{`NamespaceMode_POD|NamespaceMode_NODE|more than one mapping|container ID 0 is not mapped|NamespaceMode_CONTAINER|NamespaceMode_TARGET`, "Kubernetes user namespaces (userns_options): not supported"},
	{`apparmor|AppArmor`, "AppArmor: no AppArmor in a sandbox"},
	{`selinux|SELinux`, "SELinux: not supported"},
	{`NRI|nri`, "NRI plugins: not supported"},
	// not implemented yet
	{`pod sandbox metrics|metrics descriptors`, "ListMetricDescriptors and ListPodSandboxMetrics (cAdvisor-style metrics): not implemented yet"},
	{`propagation`, "mount propagation other than private: refused (a sandbox's mounts are private)"},
	{`recursive readonly mount|non-recursive readonly mounts`, "these cases run in a privileged sandbox (refused), and the recursive ones need recursive read-only mounts (refused)"},
	{`Image Volume|subPath|image digest in ContainerStatus mounts|mount image`, "image volumes: not supported"},
	{`safe sysctls|unsafe sysctls`, "sysctls: not supported"},
	{`Privileged is true|capability|capabilities|when privileged`, "privileged containers and capability changes: refused (the agent's fixed capability set)"},
	{`SupplementalGroups|supplemental`, "supplemental groups: not supported by the agent yet"},
	{`seccomp localhost|blocks setting hostname|setting host name with unconfined`, "seccomp profiles other than the agent's default: refused"},
	{`OOMKilled`, "needs a container memory limit, which is not applied per container (a pod's size is its sandbox's), and the OOM kill reason is not reported"},
	{`public image with digest|image digest`, "an image with a fixed digest of the public registry: nothing here can make it"},
	{`seccomp unconfined|nil profile, which is unconfined`, "seccomp Unconfined: the agent applies its default filter to every container (Unconfined is accepted and gets more confinement than asked)"},
	{`support MaskedPaths|support ReadonlyPaths`, "masked and read-only paths other than the agent's fixed lists: refused"},
	{`HostIpc is false|HostNetwork is false`, "these cases leave the containers' pid namespace mode at POD (the protobuf default), which hyperd refuses (a shared pod PID namespace)"},
	{`privilege escalation when true|privilege escalation when false`, "both need the nonewprivs image (a setuid test program): nothing here builds it; and the agent sets no_new_privs for every process, so escalation is never allowed"},
	{`support ContainerPID`, "looks for nginx's \"master process\" title in the nginx image: nothing here builds nginx (the web server images here are busybox's httpd)"},
}

// critestSkipsKVM are the cases skipped with --driver kvm only, with the
// reason. Keep the README's list in step.
var critestSkipsKVM = []skip{
	{`starting container with volume`, "host directories as volumes (critest's volume cases mount a host directory): a pod VM shares no host directory (no virtio-fs/9p); kvm volumes are disk images"},
}

// skipsFor are the skips of a driver's run.
func skipsFor(driver string) []skip {
	if driver == "kvm" {
		return append(slices.Clone(critestSkips), critestSkipsKVM...)
	}
	return critestSkips
}

func skipRegex(skips []skip) string {
	var parts []string
	for _, s := range skips {
		parts = append(parts, "("+s.what+")")
	}
	return strings.Join(parts, "|")
}

var summaryRe = regexp.MustCompile(`Ran (\d+) of (\d+) Specs.*\n.*?(SUCCESS|FAIL)!.*?(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped`)

// critestHyperd sets up what critest runs against: a network namespace,
// the registry with critest's images, and hyperd --driver driver in the
// namespace with its CNI network and the registry as its mirror.
func critestHyperd(t testing.TB, driver string) (ns string, h *hyperd) {
	t.Helper()
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CNI plugins missing (Debian's containernetworking-plugins, scripts/setup.sh): %v", err)
		}
	}
	ns = newNetns(t)
	reg := startRegistryIn(t, ns)
	pushImages(t, reg, transportIn(ns))
	var mirrors []string
	for _, r := range mirrored {
		mirrors = append(mirrors, "--registry-mirror", r+"=http://"+reg+"/"+r)
	}
	h = startHyperdIn(t, ns, driver, mirrors...)
	t.Cleanup(func() { removeSandboxes(h) })
	return ns, h
}

func TestCritest(t *testing.T) {
	requireRoot(t)
	critest := critestPath(t)
	driver := suiteDriver()
	skips := skipsFor(driver)
	ns, h := critestHyperd(t, driver)
	deadline := 25 * time.Minute
	if nested() {
		deadline = 50 * time.Minute // a pod VM boots in seconds there
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	// the whole output stays for reading after a failure
	out := filepath.Join(os.TempDir(), "hyperd-critest.log")
	args := []string{"--runtime-endpoint", "unix://" + h.criSock, "--image-endpoint", "unix://" + h.criSock,
		"--ginkgo.no-color", "--ginkgo.skip", skipRegex(skips)}
	if f := os.Getenv("HYPERD_CRITEST_FOCUS"); f != "" {
		args = append(args, "--ginkgo.focus", f)
	}
	cmd := exec.CommandContext(ctx, critest, args...)
	lf, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = t.TempDir()
	start := time.Now()
	runErr := startIn(ns, cmd)
	if runErr == nil {
		runErr = cmd.Wait()
	}
	lf.Close()
	b, _ := os.ReadFile(out)
	m := summaryRe.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("critest (%v) printed no summary after %s:\n%s\nhyperd log:\n%s", runErr, time.Since(start).Round(time.Second), tail(string(b), 20000), h.log())
	}
	summary := fmt.Sprintf("critest %s, hyperd --driver %s (CNI network): ran %s of %s specs: %s passed, %s failed, %s skipped (%d skip rules) in %s",
		CritestVersion, driver, m[1], m[2], m[4], m[5], m[7], len(skips), time.Since(start).Round(time.Second))
	t.Log(summary)
	// make test prints this file after the run (see the Makefile)
	if p := os.Getenv("HYPERD_E2E_REPORT"); p != "" {
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, "=== "+summary)
			f.Close()
		}
	}
	if runErr != nil || m[5] != "0" {
		t.Fatalf("critest failed (%v; its whole output: %s):\n%s\nhyperd log:\n%s", runErr, out, failures(string(b)), h.log())
	}
}

// failures is the part of critest's output after "Summarizing", or its tail.
func failures(s string) string {
	if i := strings.Index(s, "Summarizing"); i >= 0 {
		return tail(s[i:], 30000)
	}
	return tail(s, 20000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// removeSandboxes removes what critest left (a failed case may leave its
// sandbox, and pods outlive a stopped hyperd: their networks in the
// namespace too).
func removeSandboxes(h *hyperd) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := h.rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, sb := range l.Items {
		h.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id})
	}
}
