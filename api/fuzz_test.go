package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// FuzzHandlers sends arbitrary query strings and bodies to the non-streaming
// routes: no request may crash the daemon or produce a 500, and every error
// is a JSON {"message"}.
func FuzzHandlers(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/pod/create"}, {"POST", "/pod/labels"}, {"PUT", "/pod/p/portmappings/add"},
		{"PUT", "/pod/p/portmappings/delete"}, {"POST", "/container/create"}, {"POST", "/exec/create"},
		{"POST", "/tty/resize"}, {"GET", "/list"}, {"POST", "/container/rename"}, {"POST", "/pod/kill"},
		{"GET", "/container/logs"}, {"POST", "/container/kill"}, {"POST", "/container/commit"}, {"POST", "/image/build"},
	}
	f.Add(uint8(0), "podArgs=%7B%7D", []byte(`{"containers":[{"image":"busybox"}]}`))
	f.Add(uint8(1), "podId=p&labels=%7B%22a%22%3A1%7D", []byte(nil))
	f.Add(uint8(2), "", []byte(`[{"containerPort":"1-2","hostPort":"3-4"}]`))
	f.Add(uint8(4), "podId=p", []byte(`{"image":"busybox","volumes":[{"path":"x","volume":"v"}]}`))
	f.Add(uint8(5), "container=c&command=%5B", []byte(nil))
	f.Add(uint8(6), "container=c&w=99999999999&h=-1", []byte(nil))
	f.Add(uint8(10), "container=c&tail=-5&since=x", []byte(nil))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := pod.New(pod.Config{DataRoot: f.TempDir(), Driver: podtest.NewDriver(), Images: &podtest.Images{Root: f.TempDir()}, Logger: log, StopTimeout: 100 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	s := &api.Server{Pods: d, Log: log}
	h := s.Handler()
	spec, _ := pod.DecodePodSpec([]byte(`{"id":"p","containers":[{"image":"busybox","name":"c"}]}`))
	d.CreatePod(spec)
	f.Fuzz(func(t *testing.T, ri uint8, query string, body []byte) {
		r := routes[int(ri)%len(routes)]
		target := "/v1.1.0" + r.path + "?" + query
		if _, err := url.ParseRequestURI(target); err != nil || strings.ContainsAny(query, " #") {
			return // not a request a client could send
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // follow=1 waits for more output
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, r.method, target, strings.NewReader(string(body)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == 500 {
			t.Fatalf("%s %s?%s: 500 %s", r.method, r.path, query, w.Body.String())
		}
		if w.Code >= 400 {
			var er api.ErrorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &er); err != nil || er.Message == "" {
				t.Fatalf("%s %s?%s: %d non-JSON error %q", r.method, r.path, query, w.Code, w.Body.String())
			}
		}
	})
}
