// This file owns the e2e report (which sandbox driver ran, passed or
// failed; TestMain prints it) and the core end-to-end suite that runs
// against each driver (runE2E: TestE2ELocal here, TestE2EKVM in kvm_test.go).

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/internal/testbin"
)

var (
	ranMu    sync.Mutex
	ran      = map[string]string{}
	failures = map[string][]string{}
)

func report(driver, result string) {
	ranMu.Lock()
	ran[driver] = result
	ranMu.Unlock()
}

// failed records a test that failed against a driver's daemon, so that
// the report does not call the driver's suite passed.
func failed(driver, test string) {
	ranMu.Lock()
	failures[driver] = append(failures[driver], test)
	ranMu.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	var sum strings.Builder
	sum.WriteString("=== e2e sandbox drivers:\n")
	for _, d := range []string{"local", "kvm"} {
		r, ok := ran[d]
		if !ok {
			r = "not run (test not selected)"
		}
		if f := failures[d]; len(f) > 0 {
			r = "FAILED: " + strings.Join(f, ", ") + " (" + r + ")"
		}
		fmt.Fprintf(&sum, "===   %-5s %s\n", d, r)
	}
	fmt.Print(sum.String())
	// go test shows a passing package's output only with -v: make test
	// prints this file after the run so it always says which suite ran.
	if p := os.Getenv("HYPERD_E2E_REPORT"); p != "" {
		os.WriteFile(p, []byte(sum.String()), 0o644)
	}
	os.Exit(code)
}

// binaries returns a directory with hyperd, hyperctl and the agent: built
// once, or prebuilt where $HYPERD_TEST_BIN says (the nested runner's L1).
func binaries(t testing.TB) string {
	t.Helper()
	return testbin.Commands(t)
}

func TestE2ELocal(t *testing.T) {
	report("local", "FAILED")
	requireHost(t)
	runE2E(t, "local")
	if !t.Failed() {
		report("local", "ran, passed")
	}
}

func runE2E(t *testing.T, driver string) {
	bin := binaries(t)
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "hyper.sock")
	root := filepath.Join(tmp, "root")
	d := startDaemon(t, bin, root, sock, driver, driverFlags(t, driver)...)
	defer d.stop()
	t.Logf("hyperd --driver %s on %s", driver, sock)
	c := d.c
	ctx := ctxT(t, 10*time.Minute)

	// --- basics, with curl
	d.expect("GET", "/_ping", "", 200, "OK")
	d.expect("GET", "/v1.1.0/version", "", 200, `"Driver":"`+driver+`"`)
	info := d.expect("GET", "/info", "", 200, `"SandboxDriver":"`+driver+`"`)
	if driver == "local" && !strings.Contains(info, "NOT in virtual machines") {
		t.Errorf("/info does not warn that local is not a VM: %s", info)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v %v, want 0660", st.Mode().Perm(), err)
	}

	// --- image: built locally, loaded through /image/load (Go client)
	var tarBuf bytes.Buffer
	bb, _ := imgtest.BusyboxPath()
	if err := imgtest.Write(&tarBuf, bb, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	names, err := c.Load(ctx, bytes.NewReader(tarBuf.Bytes()))
	if err != nil {
		t.Fatalf("POST /image/load: %v\n%s", err, d.log())
	}
	t.Logf("loaded %v", names)
	d.expect("GET", "/images/get", "", 200, "busybox:latest:")

	// --- bad inputs
	d.expect("POST", "/pod/create", `{"containers":[`, 400, "malformed")
	d.expect("POST", "/pod/create?podArgs="+q(`{"dns":["nope"],"containers":[]}`), "", 400, "dns")
	d.expect("POST", "/pod/create", `{"containers":[{"image":"does-not-exist:1"}]}`, 404, "not found")
	d.expect("GET", "/pod/info?podId=pod-nosuchpod", "", 404, "not found")
	d.expect("GET", "/container/info?container=nosuch", "", 404, "not found")
	d.expect("POST", "/container/start?container=nosuch", "", 404, "not found")
	d.expect("GET", "/exitcode?container=nosuch", "", 404, "not found")
	d.expect("DELETE", "/pod?podId=nosuch", "", 404, "not found")
	d.expect("GET", "/pod/create", "", 405, "not allowed")
	d.expect("PUT", "/v1.17/list?item=pod", "", 405, "not allowed")
	d.expect("GET", "/list?item=bogus", "", 400, "item")

	// --- a pod that prints: curl create (body), Go client attach before start
	d.expect("POST", "/pod/create", `{"id":"e2e-echo","containers":[{"image":"busybox","name":"echo","command":["sh","-c","echo hello from busybox; echo to-stderr >&2; exit 3"]}],"someFutureField":true}`, 201, `"ID":"e2e-echo"`)
	d.expect("GET", "/list?item=container&pod=e2e-echo", "", 201, ":echo:e2e-echo:pending")
	st, err := c.Attach(ctx, "echo", false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != 101 {
		t.Errorf("attach answered %d, want 101", st.Status)
	}
	d.expect("POST", "/pod/start?podId=e2e-echo", "", 200, "{}")
	var so, se bytes.Buffer
	if err := st.Pump(false, nil, &so, &se); err != nil {
		t.Fatal(err)
	}
	if so.String() != "hello from busybox\n" || se.String() != "to-stderr\n" {
		t.Fatalf("attach: stdout %q stderr %q\n%s", so.String(), se.String(), d.log())
	}
	d.expect("GET", "/exitcode?container=echo", "", 200, "3")
	d.expect("GET", "/container/exitcode?container=echo", "", 200, "3")
	_, logs := d.curl("GET", "/container/logs?container=echo&stdout=1&stderr=1", "")
	lo, le := demux(t, []byte(logs))
	if lo != "hello from busybox\n" || le != "to-stderr\n" {
		t.Fatalf("logs: %q %q", lo, le)
	}
	_, logs = d.curl("GET", "/container/logs?container=echo&stdout=1&stderr=0&timestamps=1&tail=1", "")
	lo, _ = demux(t, []byte(logs))
	if !strings.HasSuffix(lo, " hello from busybox\n") || !strings.HasPrefix(lo, "20") {
		t.Fatalf("logs with timestamps: %q", lo)
	}
	waitPhase(t, d, "e2e-echo", "Failed")
	d.expect("GET", "/list?item=pod", "", 201, "e2e-echo:e2e-echo:vm-")
	ci := d.expect("GET", "/container/info?container=echo", "", 200, `"exitCode":3`)
	if !strings.Contains(ci, `"phase":"failed"`) {
		t.Errorf("container info: %s", ci)
	}

	// --- a long-running pod with port mappings (tcp and udp), a file and a
	// volume
	d.loadUDPEcho()
	port, uport := freePort(t), freeUDPPort(t)
	spec := fmt.Sprintf(`{"id":"e2e-srv","hostname":"srv","labels":{"tier":"web"},
		"files":[{"name":"page","encoding":"raw","content":"served through a port mapping\n"}],
		"volumes":[{"name":"data"}],
		"portmappings":[{"containerPort":"8080","hostPort":"%d","protocol":"tcp"},
			{"containerPort":"5353","hostPort":"%d","protocol":"udp"}],
		"containers":[{"image":"busybox","name":"web","workdir":"/www",
			"command":["sh","-c","echo ready; hostname; exec httpd -f -p 8080 -h /www"],
			"envs":[{"env":"GREETING","value":"hi there"}],
			"files":[{"path":"/www/page.html","filename":"page","perm":"0644"}],
			"volumes":[{"path":"/data","volume":"data"}]},
			{"image":"udpecho","name":"udp","command":["udpecho","5353"]}]}`, port, uport)
	id, err := c.CreatePod(ctx, []byte(spec))
	if err != nil || id != "e2e-srv" {
		t.Fatalf("create: %q %v", id, err)
	}
	if err := c.StartPod(ctx, id); err != nil {
		t.Fatalf("start: %v\n%s", err, d.log())
	}
	d.expect("POST", "/pod/start?podId=e2e-srv", "", 409, "already running")
	d.expect("GET", "/list?item=pod&pod=e2e-srv", "", 201, ":running")
	d.expect("GET", "/list?item=vm", "", 201, ":e2e-srv:associated")
	pi := d.expect("GET", "/pod/info?podId=e2e-srv", "", 200, `"phase":"Running"`)
	if !strings.Contains(pi, `"driver":"`+driver+`"`) {
		t.Errorf("pod info lacks the driver: %s", pi)
	}
	get := func(p int, path string) (string, error) {
		hc := &http.Client{Timeout: 5 * time.Second}
		var last error
		for i := 0; i < 100; i++ {
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", p, path))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return string(b), nil
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
		return "", last
	}
	if body, err := get(port, "/page.html"); err != nil || body != "served through a port mapping\n" {
		t.Fatalf("GET through port mapping: %q %v\n%s", body, err, d.log())
	}
	// udp: each host peer gets its own session to the container's port
	waitLog(t, c, "udp", "udpecho: listening")
	for _, m := range []string{"ping-1", "ping-2"} {
		if got, err := udpAsk(uport, m, slow(10*time.Second)); err != nil || got != "echo:"+m {
			t.Fatalf("udp through port mapping: %q %v\n%s", got, err, d.log())
		}
	}
	// exec (Go client): stdin half-close ends cat
	eid, err := c.ExecCreate(ctx, "web", []string{"cat"}, false)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.ExecStart(ctx, "web", eid)
	if err != nil {
		t.Fatal(err)
	}
	so.Reset()
	if err := es.Pump(false, strings.NewReader("through stdin\n"), &so, io.Discard); err != nil {
		t.Fatal(err)
	}
	if so.String() != "through stdin\n" {
		t.Fatalf("exec cat: %q", so.String())
	}
	if code, err := c.ExitCode(ctx, "web", eid); err != nil || code != 0 {
		t.Fatalf("exec exit %d %v", code, err)
	}
	// exec with curl (no Upgrade: 200 + framed stream); env, workdir, hostname
	b := d.expect("POST", "/exec/create?container=web&command="+q(`["sh","-c","echo $GREETING; pwd; hostname; ls /data; exit 4"]`), "", 201, `"exec-`)
	var curlExec string
	json.Unmarshal([]byte(b), &curlExec)
	_, out := d.curl("POST", "/exec/start?container=web&exec="+curlExec, "")
	eo, _ := demux(t, []byte(out))
	if eo != "hi there\n/www\nsrv\n" {
		t.Errorf("exec via curl: %q", eo)
	}
	d.expect("GET", "/exitcode?container=web&exec="+curlExec, "", 200, "4")
	// a Docker client's exec start: a JSON body, then the upgrade; the
	// body is not the exec's stdin
	if out := upgradeWithBody(t, d.sock, "/exec/start?container=web&exec="+execCreate(t, d, "web", `["cat"]`), `{"Detach":false,"Tty":false}`, "stdin only\n"); out != "stdin only\n" {
		t.Errorf("exec start with a Docker body: stdout %q, want only the stdin", out)
	}
	// tty exec: raw stream, resize accepted
	teid, _ := c.ExecCreate(ctx, "web", []string{"sh", "-c", "sleep 1; stty size"}, true)
	ts, err := c.ExecStart(ctx, "web", teid)
	if err != nil {
		t.Fatal(err)
	}
	d.expect("POST", "/tty/resize?container=web&exec="+teid+"&w=100&h=40", "", 200, "{}")
	so.Reset()
	ts.Pump(true, nil, &so, nil)
	if !strings.Contains(so.String(), "40 100") {
		t.Errorf("tty exec after resize: %q", so.String())
	}
	// stats, labels
	d.expect("GET", "/pod/stats?podId=e2e-srv", "", 200, `"container_stats"`)
	d.expect("POST", "/pod/labels?podId=e2e-srv&labels="+q(`{"tier":"db"}`), "", 409, "override")
	d.expect("POST", "/pod/labels?podId=e2e-srv&override=true&labels="+q(`{"tier":"db","x":"y"}`), "", 200, `"ID":"e2e-srv"`)
	d.expect("GET", "/pod/info?podId=e2e-srv", "", 200, `"tier":"db"`)
	// port mappings at runtime
	p2 := freePort(t)
	d.expect("GET", "/pod/e2e-srv/portmappings", "", 200, fmt.Sprintf(`"hostPort":"%d"`, port))
	if code, b := d.curl("PUT", "/pod/e2e-srv/portmappings/add", fmt.Sprintf(`[{"containerPort":"8080","hostPort":"%d","protocol":"tcp"}]`, p2)); code != 204 {
		t.Fatalf("add mapping: %d %s", code, b)
	}
	if body, err := get(p2, "/index.html"); err != nil || body != "hello from the busybox image\n" {
		t.Fatalf("GET through added mapping: %q %v", body, err)
	}
	d.expect("PUT", "/pod/e2e-srv/portmappings/add", fmt.Sprintf(`[{"containerPort":"80","hostPort":"%d"}]`, p2), 409, "conflict")
	if code, b := d.curl("PUT", "/v1.1.0/pod/e2e-srv/portmappings/delete", fmt.Sprintf(`[{"containerPort":"8080","hostPort":"%d","protocol":"tcp"}]`, p2)); code != 204 {
		t.Fatalf("delete mapping: %d %s", code, b)
	}
	// containers added to a running pod
	d.expect("POST", "/container/create?podId=e2e-srv", `{"image":"busybox","name":"side","command":["sh","-c","echo side; sleep 1000"]}`, 201, `"ID":"`)
	d.expect("POST", "/container/start?container=side", "", 200, "{}")
	d.expect("GET", "/container/info?container=side", "", 200, `"phase":"running"`)
	d.expect("POST", "/container/rename?oldName=side&newName=side2", "", 200, `"ID":"`)
	d.expect("POST", "/container/remove?container=side2", "", 409, "running")
	d.expect("POST", "/container/kill?container=side2&signal=KILL", "", 201, "{}")
	d.expect("GET", "/exitcode?container=side2", "", 200, "137")
	code, _ := d.curl("POST", "/container/remove?container=side2", "")
	if code != 204 {
		t.Fatalf("remove: %d", code)
	}
	// commit the running container, the image shows up, save and rmi it
	imgID, err := c.Commit(ctx, "web", "e2e-committed", "v1", "e2e", "test commit", map[string]any{"Cmd": []string{"echo", "committed"}})
	if err != nil {
		t.Fatalf("commit: %v\n%s", err, d.log())
	}
	t.Logf("committed %s", imgID)
	d.expect("GET", "/images/get", "", 200, "e2e-committed:v1:")
	_, saved := d.curl("GET", "/images/save?imageId=e2e-committed:v1", "")
	tr := tar.NewReader(strings.NewReader(saved))
	found := false
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "manifest.json" || h.Name == "index.json" {
			found = true
		}
	}
	if !found {
		t.Errorf("/images/save is not an image tar (%d bytes)", len(saved))
	}
	d.expect("DELETE", "/image?imageId=e2e-committed:v1", "", 200, `"untaged"`)
	d.expect("DELETE", "/image?imageId=e2e-committed:v1", "", 404, "")
	// registry routes against an address nothing listens on: clean errors in the stream / status
	_, pull := d.curl("POST", "/image/create?imageName=127.0.0.1:1/nothing:latest", "")
	if !strings.Contains(pull, `"error"`) {
		t.Errorf("pull from a dead registry: %s", pull)
	}
	_, push := d.curl("POST", "/image/push?remote=127.0.0.1:1/busybox&tag=latest", "")
	if !strings.Contains(push, `"error"`) {
		t.Errorf("push to a dead registry: %s", push)
	}
	if code, b := d.curl("POST", "/auth", `{"username":"u","password":"p","serveraddress":"127.0.0.1:1"}`); code < 400 || !strings.Contains(b, "message") {
		t.Errorf("auth against a dead registry: %d %s", code, b)
	}
	d.expect("POST", "/image/build?t=x", "", 400, "build context")
	// build: a Dockerfile from a directory (hyperctl build tars it), then run the result
	bdir := filepath.Join(tmp, "buildctx")
	os.MkdirAll(filepath.Join(bdir, "sub"), 0o755)
	os.WriteFile(filepath.Join(bdir, "Dockerfile"), []byte("FROM busybox\nRUN echo built-by-run > /built.txt\nCOPY sub/msg.txt /msg.txt\nENV WHO=hyperd\nCMD [\"sh\", \"-c\", \"cat /built.txt /msg.txt; echo $WHO\"]\n"), 0o644)
	os.WriteFile(filepath.Join(bdir, "sub", "msg.txt"), []byte("copied-from-context\n"), 0o644)
	hyperctlBin := filepath.Join(bin, "hyperctl")
	if out, err := exec.Command(hyperctlBin, "-H", "unix://"+sock, "build", "-t", "e2e-built:latest", bdir).CombinedOutput(); err != nil {
		t.Errorf("hyperctl build: %v\n%s\n%s", err, out, d.log())
	} else if out, err := exec.Command(hyperctlBin, "-H", "unix://"+sock, "run", "--rm", "e2e-built").CombinedOutput(); err != nil || string(out) != "built-by-run\ncopied-from-context\nhyperd\n" {
		t.Errorf("run the built image: %q %v", out, err)
	}
	d.expect("POST", "/pod/pause?podId=e2e-srv", "", 501, "pause")
	d.expect("POST", "/execvm?podId=e2e-srv", "", 501, "execvm")

	// --- hyperctl
	hctl := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "hyperctl"), append([]string{"-H", "unix://" + sock}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := hctl("run", "--rm", "busybox", "echo", "hello from hyperctl run"); err != nil || out != "hello from hyperctl run\n" {
		t.Errorf("hyperctl run: %q %v", out, err)
	}
	if out, err := hctl("run", "--rm", "busybox", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("hyperctl run exit code: %q %v", out, err)
	}
	if out, err := hctl("list"); err != nil || !strings.Contains(out, "POD ID") || !strings.Contains(out, "e2e-srv") {
		t.Errorf("hyperctl list: %q %v", out, err)
	}
	if out, err := hctl("--json", "list", "container"); err != nil || !strings.Contains(out, `"cData"`) {
		t.Errorf("hyperctl --json list container: %q %v", out, err)
	}
	if out, err := hctl("exec", "e2e-srv", "echo", "exec via hyperctl"); err != nil || out != "exec via hyperctl\n" {
		t.Errorf("hyperctl exec: %q %v", out, err)
	}
	if out, err := hctl("logs", "web"); err != nil || !strings.HasPrefix(out, "ready\nsrv\n") {
		t.Errorf("hyperctl logs: %q %v", out, err)
	}
	if out, err := hctl("images"); err != nil || !strings.Contains(out, "busybox") {
		t.Errorf("hyperctl images: %q %v", out, err)
	}
	if out, err := hctl("version"); err != nil || !strings.Contains(out, "Server version") {
		t.Errorf("hyperctl version: %q %v", out, err)
	}
	if out, err := hctl("ports", "e2e-srv"); err != nil || !strings.Contains(out, strconv.Itoa(port)) {
		t.Errorf("hyperctl ports: %q %v", out, err)
	}

	// --- kill -9 and restart: records back, running pod reattached
	d.signal(syscall.SIGKILL)
	d = startDaemon(t, bin, root, sock, driver, driverFlags(t, driver)...)
	c = d.c
	d.expect("GET", "/list?item=pod&pod=e2e-srv", "", 201, ":running")
	d.expect("GET", "/pod/info?podId=e2e-echo", "", 200, `"phase":"Failed"`)
	d.expect("GET", "/pod/info?podId=e2e-srv", "", 200, `"x":"y"`)
	d.expect("GET", "/exitcode?container=web&exec="+curlExec, "", 200, "4")
	_, logs = d.curl("GET", "/container/logs?container=echo&stdout=1&stderr=1", "")
	if lo, _ := demux(t, []byte(logs)); lo != "hello from busybox\n" {
		t.Errorf("logs after restart: %q", lo)
	}
	if body, err := get(port, "/page.html"); err != nil || body != "served through a port mapping\n" {
		t.Errorf("port mapping after restart: %q %v\n%s", body, err, d.log())
	}
	if got, err := udpAsk(uport, "ping-3", slow(10*time.Second)); err != nil || got != "echo:ping-3" {
		t.Errorf("udp port mapping after restart: %q %v\n%s", got, err, d.log())
	}
	if out, err := hctl("exec", "web", "echo", "after restart"); err != nil || out != "after restart\n" {
		t.Errorf("exec after restart: %q %v", out, err)
	}

	// --- stop and delete
	d.expect("POST", "/pod/stop?podId=e2e-srv&stopVM=yes", "", 200, `"ID":"e2e-srv"`)
	d.expect("GET", "/list?item=pod&pod=e2e-srv", "", 201, ":failed")
	d.expect("POST", "/pod/stop?podId=e2e-srv", "", 409, "not running")
	d.expect("DELETE", "/pod?podId=e2e-srv", "", 200, `"ID":"e2e-srv"`)
	d.expect("DELETE", "/pod?podId=e2e-echo", "", 200, `"ID":"e2e-echo"`)
	d.expect("GET", "/list?item=pod", "", 201, `"podData":[]`)
	// clean shutdown on SIGTERM removes the socket
	d.signal(syscall.SIGTERM)
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket left after SIGTERM")
	}
	if !strings.Contains(d.log(), "hyperd stopped") {
		t.Errorf("no clean shutdown in the log:\n%s", d.log())
	}
}
