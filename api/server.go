package api

// server.go owns the Server: its fields, the route table (Handler), the
// middleware around every request (version prefix, panic recovery, request
// log, 405/404) and the two ways a handler answers (reply, writeJSON).
// The handlers live with their resource: system.go, pods.go, containers.go,
// execs.go, streams.go, images.go; parameters are read in params.go and
// errors become statuses in errors.go.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
)

// APIVersion is what /version reports; any /v<version>/ prefix is accepted.
const APIVersion = "1.1.0"

// Server serves the hyperd REST API.
type Server struct {
	Pods     pod.Core     // the daemon core (a *pod.Daemon)
	Images   ImageService // nil: image routes answer 501
	Log      *slog.Logger
	Version  string // daemon version
	DataRoot string
	Warning  string // shown in /info (e.g. the driver fallback)
}

var versionPrefix = regexp.MustCompile(`^/v[0-9][0-9.]*/`)

// Handler returns the HTTP handler: a ServeMux with method patterns, wrapped
// to strip /v<version>/ prefixes and to recover from panics. A route's
// success status stands beside it where its handler is a call (see reply).
func (s *Server) Handler() http.Handler {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	mux := http.NewServeMux()
	routes := map[string]map[string]http.HandlerFunc{}
	add := func(method, path string, h http.HandlerFunc) {
		if routes[path] == nil {
			routes[path] = map[string]http.HandlerFunc{}
		}
		routes[path][method] = h
		mux.HandleFunc(method+" "+path, h)
	}
	const ok, created, noContent = http.StatusOK, http.StatusCreated, http.StatusNoContent
	// system.go
	add("GET", "/_ping", s.ping)
	add("GET", "/version", s.reply(ok, s.version))
	add("GET", "/info", s.reply(ok, s.info))
	// pods.go
	add("POST", "/pod/create", s.reply(created, s.podCreate))
	add("POST", "/pod/start", s.reply(ok, s.podStart))
	add("POST", "/pod/stop", s.reply(ok, s.podStop))
	add("DELETE", "/pod", s.reply(ok, s.podRemove))
	add("GET", "/list", s.list)
	add("GET", "/pod/info", s.reply(ok, s.podInfo))
	add("GET", "/pod/stats", s.reply(ok, s.podStats))
	add("POST", "/pod/labels", s.reply(ok, s.podLabels))
	add("POST", "/pod/kill", s.reply(ok, s.podKill))
	add("POST", "/pod/pause", s.reply(ok, s.podPause(true)))
	add("POST", "/pod/unpause", s.reply(ok, s.podPause(false)))
	add("GET", "/pod/{id}/portmappings", s.reply(ok, s.portMappings))
	add("PUT", "/pod/{id}/portmappings/{action}", s.reply(noContent, s.portMappingsUpdate))
	// containers.go
	add("POST", "/container/create", s.reply(created, s.containerCreate))
	add("POST", "/container/start", s.reply(ok, s.containerStart))
	add("POST", "/container/stop", s.reply(ok, s.containerStop))
	add("POST", "/container/kill", s.reply(created, s.containerKill))
	add("POST", "/container/remove", s.reply(noContent, s.containerRemove))
	add("DELETE", "/container", s.reply(noContent, s.containerRemove))
	add("POST", "/container/rename", s.reply(ok, s.containerRename))
	add("GET", "/container/info", s.reply(ok, s.containerInfo))
	add("GET", "/container/logs", s.containerLogs)
	add("GET", "/container/exitcode", s.reply(ok, s.exitCode))
	add("GET", "/exitcode", s.reply(ok, s.exitCode))
	add("POST", "/container/commit", s.reply(ok, s.containerCommit))
	// streams.go
	add("POST", "/attach", s.attach)
	add("POST", "/tty/resize", s.reply(ok, s.ttyResize))
	// execs.go
	add("POST", "/exec/create", s.reply(created, s.execCreate))
	add("POST", "/exec/start", s.execStart)
	add("POST", "/execvm", s.reply(ok, s.execVM))
	// images.go
	add("GET", "/images/get", s.reply(ok, s.imagesGet))
	add("POST", "/image/create", s.imageCreate)
	add("DELETE", "/image", s.reply(ok, s.imageRemove))
	add("POST", "/image/build", s.imageBuild)
	add("POST", "/image/push", s.imagePush)
	add("POST", "/images/push", s.imagePush)
	add("POST", "/image/load", s.imageLoad)
	add("GET", "/images/save", s.imageSave)
	add("POST", "/auth", s.auth)
	// Wrong method on a known path: 405 JSON with Allow.
	for path, ms := range routes {
		var allow []string
		for m := range ms {
			allow = append(allow, m)
			if m == "GET" {
				allow = append(allow, "HEAD")
			}
		}
		sort.Strings(allow)
		al := strings.Join(allow, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", al)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, al))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				s.Log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				if !rw.wrote && !rw.hijacked {
					writeError(rw, http.StatusInternalServerError, fmt.Sprintf("internal error: %v", v))
				}
			}
			s.Log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rw.status, "dur", time.Since(start))
		}()
		if loc := versionPrefix.FindString(r.URL.Path); loc != "" {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + r.URL.Path[len(loc):]
			r2.URL.RawPath = ""
			r = r2
		}
		mux.ServeHTTP(rw, r)
	})
}

// statusWriter remembers the status for the request log and whether the
// connection was hijacked (then a panic cannot answer 500).
type statusWriter struct {
	http.ResponseWriter
	status   int
	wrote    bool
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = 200, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// call is a handler whose whole answer is one JSON value or an error.
type call func(r *http.Request) (any, error)

// reply serves a call: its error through fail (errors.go), else code with
// the value as JSON (204 No Content: no body at all).
func (s *Server) reply(code int, c call) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := c(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if code == http.StatusNoContent {
			w.WriteHeader(code)
			return
		}
		writeJSON(w, code, v)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
