// This file tests VM templates through the daemon (kvm driver): the first
// pod of a size builds the template, pods then start restored from it
// (pod info says which), each with its own identity (hostname, wall clock,
// an RNG that diverged from its siblings'), disks and vsock; a template
// that fails to restore falls back to a cold boot, loudly; --vm-template
// =false boots cold.

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podBoot returns a running pod's info "boot" field.
func podBoot(t testing.TB, d *daemon, id string) string {
	t.Helper()
	var info struct {
		Boot string `json:"boot"`
	}
	body := d.expect("GET", "/pod/info?podName="+id, "", 200, "")
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("pod info: %v: %s", err, body)
	}
	return info.Boot
}

// identityPod runs a pod whose container prints its hostname, the guest's
// wall clock, 16 random bytes and the first bytes of its image, then
// returns its log and how it booted.
func identityPod(t *testing.T, d *daemon, id string) (out, boot string) {
	t.Helper()
	ctx := ctxT(t, slow(3*time.Minute))
	spec := fmt.Sprintf(`{"id":%q,"hostname":"host-%s","containers":[{"name":%q,"image":"busybox:latest","command":["sh","-c","echo host $(hostname); echo time $(date +%%s); echo rand $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); echo root $(ls /bin/busybox)"]}]}`, id, id, id)
	pid, err := d.c.CreatePod(ctx, []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.c.StartPod(ctx, pid); err != nil {
		t.Fatalf("start %s: %v\n%s", id, err, d.log())
	}
	boot = podBoot(t, d, pid)
	waitPhase(t, d, pid, "Succeeded")
	out = d.expect("GET", "/container/logs?container="+id+"&stdout=1", "", 200, "rand ")
	d.expect("DELETE", "/pod?podId="+pid, "", 200, "")
	return out, boot
}

// field returns the value after "name " in a pod's output.
func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, name+" "); i >= 0 {
			return strings.TrimSpace(l[i+len(name)+1:])
		}
	}
	return ""
}

// TestE2ETemplate needs the kvm driver: it runs where the host has
// vmx/svm, and in the nested runner's kvm suites (e2e/nested
// TestKVMSuites) where it has not.
func TestE2ETemplate(t *testing.T) {
	requireHost(t)
	if suiteDriver() != "kvm" && !hardwareVirt() {
		t.Skip("VM templates are the kvm driver's; without vmx/svm here this test runs in the nested runner's L1 (e2e/nested TestKVMSuites)")
	}
	t.Run("Restore", runTemplateRestore)
	t.Run("Off", runTemplateOff)
}

func runTemplateRestore(t *testing.T) {
	bin := binaries(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), "kvm", driverFlags(t, "kvm")...)
	defer func() { d.signal(syscall.SIGTERM) }()
	d.loadBusybox()

	outs := map[string]string{}
	for i, id := range []string{"tpl-a", "tpl-b", "tpl-c"} {
		out, boot := identityPod(t, d, id)
		outs[id] = out
		if !strings.HasPrefix(boot, "template ") {
			t.Errorf("pod %d (%s) booted %q, want restored from a template\n%s", i, id, boot, d.log())
		}
		if got := field(out, "host"); got != "host-"+id {
			t.Errorf("%s: hostname %q, want host-%s", id, got, id)
		}
		if sec, err := strconv.ParseInt(field(out, "time"), 10, 64); err != nil || abs(time.Now().Unix()-sec) > 30 {
			t.Errorf("%s: the guest's clock says %q, the host's %d", id, field(out, "time"), time.Now().Unix())
		}
		if field(out, "root") != "/bin/busybox" {
			t.Errorf("%s: the image disk attached at restore is not the container's root: %q", id, out)
		}
	}
	if r := field(outs["tpl-b"], "rand"); r == "" || r == field(outs["tpl-c"], "rand") {
		t.Errorf("two VMs restored from one template read the same random bytes %q: the guest RNG was not reseeded", r)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "templates"))
	if len(ents) != 1 {
		t.Errorf("%d templates for one pod size, want 1", len(ents))
	}

	// a template that cannot be restored: the pod boots cold, loudly, and
	// the template is rebuilt later (not here: templateRetry)
	for _, e := range ents {
		if err := os.WriteFile(filepath.Join(root, "templates", e.Name(), "state.json"), []byte(`{"Version":1}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, boot := identityPod(t, d, "tpl-broken")
	if boot != "cold" {
		t.Errorf("a pod whose template is broken booted %q, want cold", boot)
	}
	if field(out, "host") != "host-tpl-broken" {
		t.Errorf("the cold-booted pod's output: %q", out)
	}
	if !strings.Contains(d.log(), "booting it cold") {
		t.Errorf("the failed restore was not logged:\n%s", d.log())
	}
}

// runTemplateOff: --vm-template=false boots every pod VM cold and keeps
// no template.
func runTemplateOff(t *testing.T) {
	bin := binaries(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), "kvm", append(driverFlags(t, "kvm"), "--vm-template=false")...)
	defer func() { d.signal(syscall.SIGTERM) }()
	d.loadBusybox()
	if _, boot := identityPod(t, d, "cold-a"); boot != "cold" {
		t.Errorf("with --vm-template=false a pod booted %q", boot)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "templates")); len(ents) != 0 {
		t.Errorf("with --vm-template=false %d templates were made", len(ents))
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
