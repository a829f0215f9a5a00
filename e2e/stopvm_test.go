package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopVM drives /pod/stop?stopVM=no|yes with curl against a real hyperd
// (local driver: the "VM" is the pod's agent process): no keeps the sandbox
// (same process, listed under item=vm) and the next start reuses it; yes
// (the default) ends it; anything else is a 400.
func TestStopVM(t *testing.T) {
	requireHost(t)
	bin := binaries(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	driver := suiteDriver()
	d := startDaemon(t, bin, root, filepath.Join(tmp, "hyper.sock"), driver, driverFlags(t, driver)...)
	defer func() { d.signal(syscall.SIGTERM) }()
	d.loadBusybox()
	d.expect("POST", "/pod/create", `{"id":"svm","containers":[{"name":"svm","image":"busybox","command":["sh","-c","echo started; exec sleep 1000"]}]}`, 201, `"ID":"svm"`)
	d.expect("POST", "/pod/start?podId=svm", "", 200, "")
	waitPhase(t, d, "svm", "Running")
	// the first run printed before it is stopped (Running is the process
	// started: a pod VM restored from a template gets here fast enough to
	// stop the shell before its echo, and then only the second run prints)
	for deadline := time.Now().Add(slow(10 * time.Second)); ; time.Sleep(50 * time.Millisecond) {
		if _, logs := d.curl("GET", "/container/logs?container=svm&stdout=1", ""); strings.Contains(logs, "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container did not print; hyperd log:\n%s", d.logWithout("msg=request"))
		}
	}
	agentPids := func() []string {
		var out []string
		for pid := range agentProcs(driver, filepath.Join(root, "pods", "svm")) {
			out = append(out, pid)
		}
		return out
	}
	before := agentPids()
	if len(before) != 1 {
		t.Fatalf("agent processes of the pod: %v", before)
	}
	d.expect("POST", "/pod/stop?podId=svm&stopVM=maybe", "", 400, "stopVM")
	d.expect("POST", "/pod/stop?podId=svm&stopVM=no", "", 200, `"ID":"svm"`)
	if pi := podPhase(t, d, "svm"); pi.Status.Phase == "Running" {
		t.Fatalf("pod still running after stop: %+v", pi.Status)
	}
	if got := agentPids(); len(got) != 1 || got[0] != before[0] {
		t.Fatalf("stopVM=no did not keep the sandbox: agents %v, before %v", got, before)
	}
	d.expect("GET", "/list?item=vm", "", 201, ":svm:associated")
	d.expect("GET", "/exitcode?container=svm", "", 200, "143")
	d.expect("POST", "/pod/start?podId=svm", "", 200, "")
	waitPhase(t, d, "svm", "Running")
	if got := agentPids(); len(got) != 1 || got[0] != before[0] {
		t.Errorf("the start did not reuse the kept sandbox: agents %v, before %v", got, before)
	}
	deadline := time.Now().Add(slow(10 * time.Second))
	for {
		_, logs := d.curl("GET", "/container/logs?container=svm&stdout=1", "")
		if strings.Count(logs, "started") == 2 {
			break
		}
		if time.Now().After(deadline) {
			// is the second run there (pid 1 is its sleep), and does a new
			// stream to the agent work?
			ps := upgradeWithBody(t, d.sock, "/exec/start?container=svm&exec="+execCreate(t, d, "svm", `["ps","-o","pid,args"]`), `{"Detach":false,"Tty":false}`, "")
			t.Logf("ps in the container: %q", ps)
			_, tl := d.curl("GET", "/container/logs?container=svm&stdout=1&timestamps=1", "")
			t.Logf("logs with times: %q", tl)
			if con, err := os.ReadFile(filepath.Join(root, "pods", "svm", "sandbox", "console.log")); err == nil {
				t.Logf("the pod's console.log:\n%s", con)
			}
			_, ci := d.curl("GET", "/container/info?container=svm", "")
			t.Fatalf("the container did not run again in the kept sandbox; logs %q; container info %s; hyperd log (requests left out):\n%s", logs, ci, d.logWithout("msg=request"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// the same through hyperctl: stop --onlypod keeps the sandbox, stop ends it
	if out, err := d.hyperctl(bin, "stop", "--onlypod", "svm"); err != nil || strings.TrimSpace(out) != "svm" {
		t.Fatalf("hyperctl stop --onlypod: %v %s", err, out)
	}
	if got := agentPids(); len(got) != 1 || got[0] != before[0] {
		t.Fatalf("hyperctl stop --onlypod did not keep the sandbox: %v", got)
	}
	d.expect("POST", "/pod/start?podId=svm", "", 200, "")
	waitPhase(t, d, "svm", "Running")
	d.expect("POST", "/pod/stop?podId=svm", "", 200, `"ID":"svm"`) // stopVM defaults to yes
	for i := 0; len(agentPids()) != 0; i++ {
		if i > 200 {
			t.Fatalf("stopVM=yes left the sandbox: %v", agentPids())
		}
		time.Sleep(25 * time.Millisecond)
	}
	if _, body := d.curl("GET", "/list?item=vm", ""); strings.Contains(body, ":svm:") {
		t.Errorf("VM still listed: %s", body)
	}
	d.expect("DELETE", "/pod?podId=svm", "", 200, "")
	if _, err := os.Stat(filepath.Join(root, "pods", "svm")); !os.IsNotExist(err) {
		t.Errorf("pod dir left: %v", err)
	}
}

// agentProcs returns the pids (as strings) of the sandbox processes of the
// driver whose command line mentions sub: hyper-agent processes (local) or
// `hyperd vm run` processes (kvm).
func agentProcs(driver, sub string) map[string]bool {
	out := map[string]bool{}
	if driver == "kvm" {
		for pid := range vmProcs(sub) {
			out[fmt.Sprint(pid)] = true
		}
		return out
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(sub)) || !bytes.Contains(b, []byte("hyper-agent")) {
			continue
		}
		out[e.Name()] = true
	}
	return out
}

// TestStopPodsOnExit: hyperd --stop-pods-on-exit stops every pod's sandbox
// on SIGTERM (a running one and a stopped one whose VM was kept); the next
// hyperd finds their records, none running. Without the flag (the other
// tests) sandboxes are left for the next hyperd to reattach.
func TestStopPodsOnExit(t *testing.T) {
	requireHost(t)
	bin := binaries(t)
	tmp := t.TempDir()
	root, sock := filepath.Join(tmp, "root"), filepath.Join(tmp, "hyper.sock")
	driver := suiteDriver()
	d := startDaemon(t, bin, root, sock, driver, append(driverFlags(t, driver), "--stop-pods-on-exit")...)
	d.loadBusybox()
	for _, id := range []string{"run1", "kept1"} {
		d.expect("POST", "/pod/create", `{"id":"`+id+`","containers":[{"image":"busybox","command":["sleep","1000"]}]}`, 201, id)
		d.expect("POST", "/pod/start?podId="+id, "", 200, "")
	}
	d.expect("POST", "/pod/stop?podId=kept1&stopVM=no", "", 200, "kept1")
	if n := len(agentProcs(driver, filepath.Join(root, "pods"))); n != 2 {
		t.Fatalf("%d agents before shutdown, want 2", n)
	}
	d.signal(syscall.SIGTERM)
	if n := len(agentProcs(driver, filepath.Join(root, "pods"))); n != 0 {
		t.Fatalf("%d agents left after SIGTERM with --stop-pods-on-exit", n)
	}
	if !strings.Contains(d.log(), "their sandboxes were stopped") {
		t.Errorf("shutdown log:\n%s", d.log())
	}
	d = startDaemon(t, bin, root, sock, driver, driverFlags(t, driver)...)
	defer func() { d.signal(syscall.SIGTERM) }()
	for _, id := range []string{"run1", "kept1"} {
		if ps := podPhase(t, d, id); ps.Status.Phase == "Running" || ps.Status.Phase == "" {
			t.Errorf("pod %s after the restart: %+v", id, ps.Status)
		}
	}
	if _, body := d.curl("GET", "/list?item=vm", ""); strings.Contains(body, "associated") {
		t.Errorf("a VM is still associated: %s", body)
	}
}
