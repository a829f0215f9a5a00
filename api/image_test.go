package api_test

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
)

// fakeImages is an ImageService whose Build runs the steps of a tiny
// Dockerfile language ("RUN <shell>" lines, "FAIL <msg>" before any output)
// through the daemon's step runner, as image.Store.Build does, so the
// handler, the options and the runner policy are tested here; the real
// builder through hyperd is e2e's TestE2ERegistry.
type fakeImages struct {
	api.ImageService // other methods are not called

	mu        sync.Mutex
	opts      []api.BuildOptions
	saved     []api.AuthConfig
	saveError error
}

func (f *fakeImages) Build(ctx context.Context, r io.Reader, opt api.BuildOptions, run pod.BuildRunFunc, out io.Writer, progress func(api.Progress)) (string, error) {
	f.mu.Lock()
	f.opts = append(f.opts, opt)
	f.mu.Unlock()
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if msg, ok := strings.CutPrefix(lines[0], "FAIL "); ok {
		return "", &pod.SpecError{Msg: "bad parameter: " + msg}
	}
	progress(api.Progress{Status: "Pulling from base", ID: "latest"})
	for i, l := range lines {
		_, arg, _ := strings.Cut(l, " ")
		fmt.Fprintf(out, "Step %d/%d : %s\n", i+1, len(lines), l)
		layer, err := run(ctx, "busybox", []string{"/bin/sh", "-c", arg}, []string{"A=1"}, "/", "", out)
		if err != nil {
			return "", err
		}
		if _, err := tar.NewReader(layer).Next(); err != nil {
			return "", err
		}
		layer.Close()
	}
	return "sha256:built", nil
}

func (f *fakeImages) CheckAuth(ctx context.Context, a api.AuthConfig) (string, error) {
	if a.Password != "right" {
		return "", errors.New("login to " + a.ServerAddress + ": unauthorized: incorrect username or password")
	}
	return "Login Succeeded", nil
}

func (f *fakeImages) SaveAuth(a api.AuthConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.saveError != nil {
		return f.saveError
	}
	f.saved = append(f.saved, a)
	return nil
}

// newImageEnv is newEnv's daemon served with an image service.
func newImageEnv(t *testing.T) (*env, *fakeImages) {
	e := newEnv(t)
	fi := &fakeImages{}
	e.srv = httptest.NewServer((&api.Server{Pods: e.d, Images: fi, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"}).Handler())
	t.Cleanup(e.srv.Close)
	var err error
	if e.c, err = client.New("tcp://" + strings.TrimPrefix(e.srv.URL, "http://")); err != nil {
		t.Fatal(err)
	}
	return e, fi
}

// build posts a context and returns the status and the stream's messages (or the error body).
func (e *env) build(query, body string, hdr http.Header) (int, []api.JSONMessage, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/image/build"+query, strings.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, nil, string(b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("build stream content type %q", ct)
	}
	var msgs []api.JSONMessage
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m api.JSONMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			e.t.Fatalf("build stream line is not a JSON message: %q", l)
		}
		msgs = append(msgs, m)
	}
	return 200, msgs, string(b)
}

func streamOf(msgs []api.JSONMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Stream)
	}
	return b.String()
}

func buildPods(e *env) []string {
	var out []string
	for _, p := range e.d.ListPods("", "") {
		if strings.HasPrefix(p, "build-") {
			out = append(out, p)
		}
	}
	return out
}

func TestBuild(t *testing.T) {
	e, fi := newImageEnv(t)
	cfg, _ := json.Marshal(map[string]api.AuthConfig{"reg.example:5000": {Username: "u", Password: "p"}})
	code, msgs, raw := e.build("?t=built:v1&t=other&dockerfile=sub/Dockerfile&nocache=1&pull=true&q=0&buildargs="+urlq(`{"A":"x"}`),
		"RUN echo built it\nRUN echo second", http.Header{"X-Registry-Config": {base64.URLEncoding.EncodeToString(cfg)}})
	if code != 200 {
		t.Fatalf("build: %d %s", code, raw)
	}
	out := streamOf(msgs)
	for _, want := range []string{"Step 1/2 : RUN echo built it\n ---> Running in build-", "built it\n", "Removing intermediate container build-", "Step 2/2", "second\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	if msgs[0].Status != "Pulling from base" || msgs[0].ID != "latest" {
		t.Errorf("FROM pull progress not in the stream: %+v", msgs[0])
	}
	var res api.BuildResult
	if last := msgs[len(msgs)-1]; json.Unmarshal(last.Aux, &res) != nil || res.ID != "sha256:built" {
		t.Errorf("last message %+v, want aux ID", last)
	}
	o := fi.opts[0]
	if strings.Join(o.Tags, ",") != "built:v1,other" || o.Dockerfile != "sub/Dockerfile" || !o.NoCache || !o.Pull || o.Quiet ||
		o.BuildArgs["A"] != "x" || o.Auths["reg.example:5000"].Password != "p" {
		t.Errorf("options %+v", o)
	}
	if p := buildPods(e); len(p) != 0 || len(e.drv.Running()) != 0 {
		t.Errorf("build left pods %v sandboxes %v", p, e.drv.Running())
	}

	// A failing step is the stream's error; without forcerm its container stays.
	code, msgs, raw = e.build("", "RUN exit 2", nil)
	if last := msgs[len(msgs)-1]; code != 200 || !strings.Contains(last.Error, "returned a non-zero code: 2") || last.ErrorDetail == nil {
		t.Fatalf("failing build: %d %s", code, raw)
	}
	kept := buildPods(e)
	if len(kept) != 1 || !strings.Contains(streamOf(msgs), "Keeping intermediate container") {
		t.Errorf("failed step's container: %v\n%s", kept, raw)
	}
	for _, p := range kept {
		id, _, _ := strings.Cut(p, ":")
		e.d.RemovePod(ctx(t), id)
	}
	if _, msgs, _ = e.build("?forcerm=1&rm=0", "RUN exit 2", nil); len(buildPods(e)) != 0 || msgs[len(msgs)-1].Error == "" {
		t.Errorf("forcerm kept %v", buildPods(e))
	}
	// rm=0 keeps the containers of successful steps.
	if _, _, raw = e.build("?rm=0", "RUN echo a\nRUN echo b", nil); len(buildPods(e)) != 2 {
		t.Errorf("rm=0 kept %v\n%s", buildPods(e), raw)
	}

	// The Go client gets the stream and returns the error.
	var lines []string
	if err := e.c.Build(ctx(t), strings.NewReader("RUN echo via client"), []string{"c:1"}, "", func(m api.JSONMessage) { lines = append(lines, m.Stream) }); err != nil ||
		!strings.Contains(strings.Join(lines, ""), "via client\n") {
		t.Errorf("client build: %v %q", err, lines)
	}
	if err := e.c.Build(ctx(t), strings.NewReader("RUN exit 3"), nil, "", nil); err == nil || !strings.Contains(err.Error(), "non-zero code: 3") {
		t.Errorf("client failing build: %v", err)
	}

	// Errors before any output have their own status.
	for _, tc := range []struct {
		query, body string
		hdr         http.Header
		code        int
		contains    string
	}{
		{"", "FAIL no Dockerfile in the context", nil, 400, "no Dockerfile"},
		{"?buildargs=" + urlq(`["x"]`), "RUN true", nil, 400, "buildargs"},
		{"", "RUN true", http.Header{"X-Registry-Config": {"%%%"}}, 400, "X-Registry-Config"},
		{"", "RUN true", http.Header{"X-Registry-Config": {base64.StdEncoding.EncodeToString([]byte(`[1]`))}}, 400, "X-Registry-Config"},
		{"?remote=https://example.com/x.git", "", nil, 501, "remote"},
	} {
		code, _, body := e.build(tc.query, tc.body, tc.hdr)
		if code != tc.code || !strings.Contains(body, tc.contains) || !strings.Contains(body, `"message"`) {
			t.Errorf("build%s: %d %s, want %d with %q", tc.query, code, body, tc.code, tc.contains)
		}
	}
	// Without an image store: 501.
	if code, body, _ := newEnv(t).raw("POST", "/image/build", "RUN true"); code != 501 {
		t.Errorf("build without a store: %d %s", code, body)
	}
}

// POST /auth checks the credentials and stores accepted ones (only those).
func TestAuthStoresCredentials(t *testing.T) {
	e, fi := newImageEnv(t)
	code, body, _ := e.raw("POST", "/auth", `{"username":"alice","password":"wrong","serveraddress":"reg.example:5000"}`)
	if code != 401 || !strings.Contains(body, "unauthorized") || len(fi.saved) != 0 {
		t.Fatalf("wrong password: %d %s, saved %v", code, body, fi.saved)
	}
	st, err := e.c.Auth(ctx(t), api.AuthConfig{Username: "alice", Password: "right", Email: "a@example.com", ServerAddress: "reg.example:5000"})
	if err != nil || st != "Login Succeeded" {
		t.Fatalf("right password: %q %v", st, err)
	}
	if len(fi.saved) != 1 || fi.saved[0].Username != "alice" || fi.saved[0].Password != "right" || fi.saved[0].ServerAddress != "reg.example:5000" {
		t.Errorf("saved %+v", fi.saved)
	}
	fi.saveError = errors.New("disk full")
	if code, body, _ := e.raw("POST", "/auth", `{"username":"alice","password":"right","serveraddress":"reg.example:5000"}`); code != 500 || !strings.Contains(body, "disk full") {
		t.Errorf("failed save: %d %s", code, body)
	}
	if code, body, _ := e.raw("POST", "/auth", `{"username":`); code != 400 {
		t.Errorf("bad body: %d %s", code, body)
	}
}
