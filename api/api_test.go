package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// These tests drive the real handlers and daemon core over HTTP with the
// in-memory podtest driver; the e2e package runs the real binaries.

type env struct {
	t    *testing.T
	srv  *httptest.Server
	c    *client.Client
	d    *pod.Daemon
	drv  *podtest.Driver
	imgs *podtest.Images
}

func newEnv(t *testing.T) *env {
	t.Helper()
	drv := podtest.NewDriver()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	imgs := &podtest.Images{Root: t.TempDir()}
	d, err := pod.New(pod.Config{DataRoot: t.TempDir(), Driver: drv, Images: imgs, Logger: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := &api.Server{Pods: d, Log: log, Version: "test"}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); d.Close() })
	c, err := client.New("tcp://" + strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, c: c, d: d, drv: drv, imgs: imgs}
}

func (e *env) raw(method, path string, body string) (int, string, http.Header) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRoutesStatusAndBodies(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path, body string
		code                     int
		contains                 string
	}{
		{"ping", "GET", "/_ping", "", 200, "OK"},
		{"ping versioned", "GET", "/v1.1.0/_ping", "", 200, "OK"},
		{"version", "GET", "/v1.17/version", "", 200, `"ApiVersion":"1.1.0"`},
		{"info", "GET", "/info", "", 200, `"SandboxDriver":"fake"`},
		{"create via query", "POST", "/pod/create?podArgs=" + urlq(`{"id":"q1","containers":[{"image":"busybox"}]}`), "", 201, `{"ID":"q1","Code":0,"Cause":""}`},
		{"create via body", "POST", "/v1.1.0/pod/create", `{"id":"b1","containers":[{"image":"busybox","command":["echo","x"]}],"unknown":1}`, 201, `"ID":"b1"`},
		{"create duplicate", "POST", "/pod/create", `{"id":"b1","containers":[]}`, 409, `"message"`},
		{"create malformed", "POST", "/pod/create", `{"containers":[`, 400, "malformed pod spec"},
		{"create bad dns", "POST", "/pod/create", `{"dns":["x"],"containers":[]}`, 400, "incorrect dns"},
		{"create unknown image", "POST", "/pod/create", `{"containers":[{"image":"nope"}]}`, 404, "image nope not found"},
		{"create no command", "POST", "/pod/create", `{"containers":[{"image":"nocmd"}]}`, 400, "no command specified"},
		{"list pods", "GET", "/list?item=pod", "", 201, `"podData":["`},
		{"list containers", "GET", "/list?item=container&pod=q1", "", 201, `:q1:pending"`},
		{"list vm empty", "GET", "/list?item=vm", "", 201, `"vmData":[]`},
		{"list bad item", "GET", "/list?item=x", "", 400, "item must be"},
		{"pod info", "GET", "/pod/info?podId=q1", "", 200, `"kind":"Pod"`},
		{"pod info unknown", "GET", "/pod/info?podId=nope", "", 404, "pod nope not found"},
		{"pod info missing param", "GET", "/pod/info", "", 400, "missing query parameter podId"},
		{"labels", "POST", "/pod/labels?podId=q1&labels=" + urlq(`{"a":"1"}`), "", 200, `"ID":"q1"`},
		{"labels conflict", "POST", "/pod/labels?podId=q1&labels=" + urlq(`{"a":"2"}`), "", 409, "override"},
		{"labels override", "POST", "/pod/labels?podId=q1&override=true&labels=" + urlq(`{"a":"2"}`), "", 200, `"ID":"q1"`},
		{"labels bad json", "POST", "/pod/labels?podId=q1&labels=x", "", 400, "labels must be"},
		{"stats not running", "GET", "/pod/stats?podId=q1", "", 409, "not running"},
		{"portmappings", "GET", "/pod/q1/portmappings", "", 200, `{"portMappings":[]}`},
		{"portmappings unknown pod", "GET", "/pod/nope/portmappings", "", 404, "not found"},
		{"portmappings bad action", "PUT", "/pod/q1/portmappings/frob", `[]`, 400, "action must be"},
		{"portmappings bad body", "PUT", "/pod/q1/portmappings/add", `{}`, 400, "array"},
		{"portmappings add", "PUT", "/pod/q1/portmappings/add", `[{"containerPort":"80","hostPort":"0","protocol":"tcp"}]`, 400, "out of range"},
		{"pause", "POST", "/pod/pause?podId=q1", "", 501, "pause"},
		{"execvm", "POST", "/execvm?podId=q1", "", 501, "execvm"},
		{"container info unknown", "GET", "/container/info?container=nope", "", 404, "container nope not found"},
		{"container start unknown", "POST", "/container/start?container=nope", "", 404, "not found"},
		{"exec create not running", "POST", "/exec/create?container=q1-busybox-0&command=" + urlq(`["ls"]`), "", 409, "not running"},
		{"exec create bad command", "POST", "/exec/create?container=q1-busybox-0&command=" + urlq(`["ls"`), "", 400, "JSON array"},
		{"resize bad", "POST", "/tty/resize?container=q1-busybox-0&w=x&h=1", "", 400, "positive"},
		{"rename", "POST", "/container/rename?oldName=q1-busybox-0&newName=renamed", "", 200, `"ID":"`},
		{"rename conflict", "POST", "/container/rename?oleName=renamed&newName=b1-busybox-0", "", 409, "already in use"},
		{"kill not running", "POST", "/container/kill?container=renamed&signal=9", "", 409, "not running"},
		{"kill bad signal", "POST", "/container/kill?container=renamed&signal=NOPE", "", 400, "invalid signal"},
		{"images no store", "GET", "/images/get", "", 501, "no image store"},
		{"wrong method", "GET", "/pod/create", "", 405, "method GET not allowed"},
		{"wrong method versioned", "DELETE", "/v1.2/list", "", 405, "not allowed"},
		{"unknown route", "GET", "/nope", "", 404, "no such route"},
		{"delete pod", "DELETE", "/pod?podId=q1", "", 200, `"ID":"q1"`},
		{"delete pod again", "DELETE", "/pod?podId=q1", "", 404, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := e.raw(tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Fatalf("%s %s = %d %s; want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.contains)
			}
			if code >= 400 {
				var er api.ErrorResponse
				if err := json.Unmarshal([]byte(body), &er); err != nil || er.Message == "" {
					t.Fatalf("error body not JSON {message}: %s", body)
				}
				if hdr.Get("Content-Type") != "application/json" {
					t.Fatalf("content-type %q", hdr.Get("Content-Type"))
				}
			}
		})
	}
}

func urlq(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}

func TestRunAttachBeforeStartAndLogs(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	id, err := e.c.CreatePod(c, []byte(`{"id":"p1","containers":[{"image":"busybox","command":["echo","from","the","first","byte"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pi, err := e.c.PodInfo(c, id)
	if err != nil {
		t.Fatal(err)
	}
	cid := pi.Spec.Containers[0].ContainerID
	st, err := e.c.Attach(c, cid, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != 101 {
		t.Fatalf("attach status %d", st.Status)
	}
	if err := e.c.StartPod(c, id); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := st.Pump(false, nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if out.String() != "from the first byte\n" {
		t.Fatalf("attach output %q", out.String())
	}
	code, err := e.c.ExitCode(c, cid, "")
	if err != nil || code != 0 {
		t.Fatalf("exit %d %v", code, err)
	}
	out.Reset()
	if err := e.c.Logs(c, cid, client.LogsOptions{Stdout: true, Stderr: true}, false, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if out.String() != "from the first byte\n" {
		t.Fatalf("logs %q", out.String())
	}
	// the pod finishes: sandbox stopped, list says failed (original), info Succeeded
	waitFor(t, func() bool {
		pi, _ := e.c.PodInfo(c, id)
		return pi.Status.Phase == "Succeeded"
	})
	l, _ := e.c.List(c, "pod", "")
	if len(l.PodData) != 1 || l.PodData[0] != "p1:p1:"+strings.Split(l.PodData[0], ":")[2]+":failed" {
		t.Fatalf("list %v", l.PodData)
	}
	if len(e.drv.Running()) != 0 {
		t.Fatalf("sandbox still running: %v", e.drv.Running())
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if f() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5s")
}

func TestExecStdinHalfCloseAndStderrFrames(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	id, _ := e.c.CreatePod(c, []byte(`{"id":"p2","containers":[{"image":"sleeper","name":"s"}]}`))
	if err := e.c.StartPod(c, id); err != nil {
		t.Fatal(err)
	}
	eid, err := e.c.ExecCreate(c, "s", []string{"cat"}, false)
	if err != nil || !strings.HasPrefix(eid, "exec-") {
		t.Fatalf("exec create %q %v", eid, err)
	}
	st, err := e.c.ExecStart(c, "s", eid)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := st.Pump(false, strings.NewReader("ping\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ping\n" {
		t.Fatalf("exec out %q", out.String())
	}
	if code, err := e.c.ExitCode(c, "s", eid); err != nil || code != 0 {
		t.Fatalf("exec exit %d %v", code, err)
	}
	eid2, _ := e.c.ExecCreate(c, "s", []string{"err", "oops"}, false)
	st, err = e.c.ExecStart(c, "s", eid2)
	if err != nil {
		t.Fatal(err)
	}
	var so, se bytes.Buffer
	st.Pump(false, nil, &so, &se)
	if so.String() != "" || se.String() != "oops\n" {
		t.Fatalf("stdout %q stderr %q", so.String(), se.String())
	}
	if code, _ := e.c.ExitCode(c, "s", eid2); code != 1 {
		t.Fatalf("exit %d", code)
	}
	// tty resize reaches the agent
	if err := e.c.Resize(c, "s", "", 120, 40); err != nil {
		t.Fatal(err)
	}
	// stats
	ps, err := e.c.PodStats(c, id)
	if err != nil || len(ps.ContainerStats) != 1 {
		t.Fatalf("stats %+v %v", ps, err)
	}
	// kill → 137, pod finishes Failed
	if err := e.c.KillContainer(c, "s", 9); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.c.ExitCode(c, "s", ""); code != 137 {
		t.Fatalf("killed exit %d", code)
	}
	waitFor(t, func() bool { pi, _ := e.c.PodInfo(c, id); return pi.Status.Phase == "Failed" })
}

func TestPortMappingsForwardAndConflict(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	spec := `{"id":"pm","portmappings":[{"containerPort":"80","hostPort":"` + itoa(port) + `"}],"containers":[{"image":"sleeper"}]}`
	if _, err := e.c.CreatePod(c, []byte(spec)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreatePod(c, []byte(strings.Replace(spec, `"pm"`, `"pm2"`, 1))); client.StatusOf(err) != 409 {
		t.Fatalf("conflicting pod: %v", err)
	}
	if err := e.c.StartPod(c, "pm"); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hey"))
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := conn.Read(buf)
	conn.Close()
	if string(buf[:n]) != "tcp/80:hey" {
		t.Fatalf("forwarded %q", buf[:n])
	}
	// add a udp mapping at runtime
	l2, _ := net.ListenPacket("udp", "127.0.0.1:0")
	uport := l2.LocalAddr().(*net.UDPAddr).Port
	l2.Close()
	if err := e.c.UpdatePortMappings(c, "pm", "add", []api.PortMapping{{ContainerPort: "53", HostPort: itoa(uport), Protocol: "udp"}}); err != nil {
		t.Fatal(err)
	}
	uc, _ := net.Dial("udp", "127.0.0.1:"+itoa(uport))
	uc.Write([]byte("dns?"))
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ = uc.Read(buf)
	uc.Close()
	if string(buf[:n]) != "udp/53:dns?" {
		t.Fatalf("udp forwarded %q", buf[:n])
	}
	pms, _ := e.c.PortMappings(c, "pm")
	if len(pms) != 2 {
		t.Fatalf("mappings %v", pms)
	}
	if err := e.c.UpdatePortMappings(c, "pm", "add", []api.PortMapping{{ContainerPort: "81", HostPort: itoa(port)}}); client.StatusOf(err) != 409 {
		t.Fatalf("duplicate host port: %v", err)
	}
	if err := e.c.UpdatePortMappings(c, "pm", "delete", []api.PortMapping{{ContainerPort: "80", HostPort: itoa(port)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(port), time.Second); err == nil {
		t.Fatal("deleted mapping still listening")
	}
	if err := e.c.StopPod(c, "pm"); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + jsonNum(n)) }

func jsonNum(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestContainerLifecycleAndCommit(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	if _, err := e.c.CreatePod(c, []byte(`{"id":"cl","containers":[{"image":"sleeper","name":"main"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartPod(c, "cl"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartPod(c, "cl"); client.StatusOf(err) != 409 {
		t.Fatalf("double start: %v", err)
	}
	cid, err := e.c.CreateContainer(c, "cl", []byte(`{"image":"sleeper","name":"side","command":["sleep","side up"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartContainer(c, cid); err != nil {
		t.Fatal(err)
	}
	ci, err := e.c.ContainerInfo(c, "side")
	if err != nil || ci.Status.Phase != "running" || ci.PodID != "cl" {
		t.Fatalf("info %+v %v", ci, err)
	}
	img, err := e.c.Commit(c, "side", "myrepo", "v1", "me", "msg", map[string]any{"Cmd": []string{"echo"}})
	if err != nil || !strings.HasPrefix(img, "sha256:c0ff") {
		t.Fatalf("commit %q %v", img, err)
	}
	if err := e.c.RemoveContainer(c, "side"); client.StatusOf(err) != 409 {
		t.Fatalf("remove running: %v", err)
	}
	if err := e.c.StopContainer(c, "side"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.c.ExitCode(c, "side", ""); code != 143 {
		t.Fatalf("stopped exit %d", code)
	}
	if err := e.c.RemoveContainer(c, "side"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.KillPod(c, "cl", "", 15); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { pi, _ := e.c.PodInfo(c, "cl"); return pi.Status.Phase == "Failed" })
	// a finished pod starts again
	if err := e.c.StartPod(c, "cl"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StopPod(c, "cl"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemovePod(c, "cl"); err != nil {
		t.Fatal(err)
	}
}

func TestRestartPolicy(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	if _, err := e.c.CreatePod(c, []byte(`{"id":"rp","restartPolicy":"onFailure","containers":[{"image":"busybox","command":["exit","3"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartPod(c, "rp"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		pi, _ := e.c.PodInfo(c, "rp")
		return len(pi.Spec.Containers) > 0 && pi.Spec.Containers[0].RestartCount >= 2
	})
	if err := e.c.StopPod(c, "rp"); err != nil {
		t.Fatal(err)
	}
}

func TestPanicRecovered(t *testing.T) {
	// a nil daemon makes handlers panic: the server must answer 500 JSON and live on
	s := &api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for i := 0; i < 2; i++ {
		resp, err := http.Get(srv.URL + "/info")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || !strings.Contains(string(b), `"message":"internal error`) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
}

func TestTtyStreamsAreRaw(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	if _, err := e.c.CreatePod(c, []byte(`{"id":"tty","tty":true,"containers":[{"image":"busybox","name":"t","command":["err","raw bytes"]}]}`)); err != nil {
		t.Fatal(err)
	}
	st, err := e.c.Attach(c, "t", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartPod(c, "tty"); err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(st.Reader)
	st.Conn.Close()
	if string(raw) != "raw bytes\n" {
		t.Fatalf("tty attach not raw: %q", raw)
	}
	if code, _ := e.c.ExitCode(c, "t", ""); code != 1 {
		t.Fatalf("exit %d", code)
	}
	code, body, hdr := e.raw("GET", "/container/logs?container=t&stdout=1&stderr=1", "")
	if code != 200 || body != "raw bytes\n" || hdr.Get("Content-Type") != "application/vnd.docker.raw-stream" {
		t.Fatalf("tty logs: %d %q %v", code, body, hdr)
	}
}
