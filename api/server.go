package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// APIVersion is what /version reports; any /v<version>/ prefix is accepted.
const APIVersion = "1.1.0"

// Server serves the hyperd REST API.
type Server struct {
	Pods     pod.Core
	Images   ImageService // nil: image routes answer 501
	Log      *slog.Logger
	Version  string // daemon version
	DataRoot string
	Warning  string // shown in /info (e.g. the driver fallback)
}

var versionPrefix = regexp.MustCompile(`^/v[0-9][0-9.]*/`)

// Handler returns the HTTP handler: a ServeMux with method patterns, wrapped
// to strip /v<version>/ prefixes and to recover from panics.
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
	add("GET", "/_ping", s.ping)
	add("GET", "/version", s.version)
	add("GET", "/info", s.info)
	add("POST", "/pod/create", s.podCreate)
	add("POST", "/pod/start", s.podStart)
	add("POST", "/pod/stop", s.podStop)
	add("DELETE", "/pod", s.podRemove)
	add("GET", "/list", s.list)
	add("GET", "/pod/info", s.podInfo)
	add("GET", "/pod/stats", s.podStats)
	add("POST", "/pod/labels", s.podLabels)
	add("POST", "/pod/kill", s.podKill)
	add("POST", "/pod/pause", s.podPause(true))
	add("POST", "/pod/unpause", s.podPause(false))
	add("GET", "/pod/{id}/portmappings", s.portMappings)
	add("PUT", "/pod/{id}/portmappings/{action}", s.portMappingsUpdate)
	add("POST", "/container/create", s.containerCreate)
	add("POST", "/container/start", s.containerStart)
	add("POST", "/container/stop", s.containerStop)
	add("POST", "/container/kill", s.containerKill)
	add("POST", "/container/remove", s.containerRemove)
	add("DELETE", "/container", s.containerRemove)
	add("POST", "/container/rename", s.containerRename)
	add("GET", "/container/info", s.containerInfo)
	add("GET", "/container/logs", s.containerLogs)
	add("GET", "/container/exitcode", s.exitCode)
	add("GET", "/exitcode", s.exitCode)
	add("POST", "/container/commit", s.containerCommit)
	add("POST", "/attach", s.attach)
	add("POST", "/tty/resize", s.ttyResize)
	add("POST", "/exec/create", s.execCreate)
	add("POST", "/exec/start", s.execStart)
	add("POST", "/execvm", s.execVM)
	add("GET", "/images/get", s.imagesGet)
	add("POST", "/image/create", s.imageCreate)
	add("DELETE", "/image", s.imageRemove)
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Message: msg})
}

// statusOf maps an error to the original's status codes.
func statusOf(err error) int {
	var se *pod.SpecError
	var nf *pod.NotFoundError
	var cf *pod.ConflictError
	var ni *pod.NotImplementedError
	switch {
	case errors.As(err, &se):
		return http.StatusBadRequest
	case errors.As(err, &nf):
		return http.StatusNotFound
	case errors.As(err, &cf):
		return http.StatusConflict
	case errors.As(err, &ni):
		return http.StatusNotImplemented
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	m := strings.ToLower(err.Error())
	switch {
	case strings.Contains(m, "not found") || strings.Contains(m, "no such"):
		return http.StatusNotFound
	case strings.Contains(m, "bad parameter"):
		return http.StatusBadRequest
	case strings.Contains(m, "conflict"):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code >= 500 {
		s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err.Error())
}

func badParam(format string, a ...any) error {
	return &pod.SpecError{Msg: "bad parameter: " + fmt.Sprintf(format, a...)}
}

// q returns the first non-empty query value among names.
func q(r *http.Request, names ...string) string {
	v := r.URL.Query()
	for _, n := range names {
		if s := v.Get(n); s != "" {
			return s
		}
	}
	return ""
}

func need(r *http.Request, names ...string) (string, error) {
	if s := q(r, names...); s != "" {
		return s, nil
	}
	return "", badParam("missing query parameter %s", names[0])
}

func boolParam(r *http.Request, name string, def bool) bool {
	switch strings.ToLower(r.URL.Query().Get(name)) {
	case "yes", "true", "on", "1":
		return true
	case "no", "false", "off", "0":
		return false
	}
	return def
}

// --- misc ---

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("OK"))
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, VersionInfo{Version: s.Version, APIVersion: APIVersion, GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH, Driver: s.Pods.DriverName()})
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func osName() string {
	b, err := os.ReadFile("/etc/os-release")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				return strings.Trim(v, `"`)
			}
		}
	}
	return runtime.GOOS
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	pods, ctrs, running := s.Pods.Counts()
	host, _ := os.Hostname()
	images := 0
	if s.Images != nil {
		if l, err := s.Images.List(false); err == nil {
			images = len(l)
		}
	}
	drv := s.Pods.DriverName()
	iso := s.Pods.Isolation()
	st := [][]string{{"Sandbox driver", drv}, {"Isolation", iso}, {"Running pods", strconv.Itoa(running)}}
	if s.Warning != "" {
		st = append(st, []string{"WARNING", s.Warning})
	}
	writeJSON(w, 200, Info{ID: host, Containers: ctrs, Images: images, Driver: drv, DriverStatus: st, MemTotal: memTotal(),
		Pods: pods, OperatingSystem: osName(), Name: host, DockerRootDir: s.DataRoot, SandboxDriver: drv, Isolation: iso,
		Warning: s.Warning, RunningPods: running})
}

// --- pods ---

func (s *Server) podCreate(w http.ResponseWriter, r *http.Request) {
	data := []byte(q(r, "podArgs"))
	if len(data) == 0 {
		b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			s.fail(w, r, badParam("reading body: %v", err))
			return
		}
		data = b
	}
	spec, err := pod.DecodePodSpec(data)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, err := s.Pods.CreatePod(spec)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, PodResult{ID: id})
}

func podRef(r *http.Request) (string, error) { return need(r, "podId", "podName", "pod") }

func (s *Server) podStart(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err == nil {
		err = s.Pods.StartPod(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, struct{}{})
}

func (s *Server) podStop(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err == nil {
		// stopVM=yes (the default) destroys the pod's VM; no keeps it idle
		// for the next start
		switch strings.ToLower(q(r, "stopVM")) {
		case "", "yes", "true", "1":
			err = s.Pods.StopPod(r.Context(), id)
		case "no", "false", "0":
			err = s.Pods.StopPodKeepSandbox(r.Context(), id)
		default:
			err = badParam("stopVM must be yes or no, not %q", q(r, "stopVM"))
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: id})
}

func (s *Server) podRemove(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err == nil {
		err = s.Pods.RemovePod(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: id})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	item := q(r, "item")
	pf, vf := q(r, "pod", "podId"), q(r, "vm", "vmId")
	res := ListResult{Item: item}
	switch item {
	case "pod":
		res.PodData = nonNil(s.Pods.ListPods(pf, vf))
	case "container":
		res.CData = nonNil(s.Pods.ListContainers(pf, vf))
	case "vm":
		res.VMData = nonNil(s.Pods.ListVMs(pf, vf))
	default:
		s.fail(w, r, badParam("item must be pod, container or vm (got %q)", item))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	// podData/cData/vmData present even when empty
	out := map[string]any{"item": item}
	switch item {
	case "pod":
		out["podData"] = res.PodData
	case "container":
		out["cData"] = res.CData
	case "vm":
		out["vmData"] = res.VMData
	}
	json.NewEncoder(w).Encode(out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) podInfo(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pi, err := s.Pods.PodInfo(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, pi)
}

func (s *Server) podStats(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.Pods.Stats(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, st)
}

func (s *Server) podLabels(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	raw := q(r, "labels")
	if raw == "" {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		raw = string(b)
	}
	labels := map[string]string{}
	if err := json.Unmarshal([]byte(raw), &labels); err != nil {
		s.fail(w, r, badParam("labels must be a JSON object of strings: %v", err))
		return
	}
	pid, err := s.Pods.SetLabels(id, labels, boolParam(r, "override", false))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: pid})
}

func sigParam(r *http.Request) (int, error) {
	sv := q(r, "signal")
	if sv == "" {
		return 9, nil
	}
	n, err := pod.ParseSignal(sv)
	if err != nil {
		return 0, badParam("%v", err)
	}
	return n, nil
}

func (s *Server) podKill(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sig, err := sigParam(r)
	if err == nil {
		err = s.Pods.KillPod(r.Context(), id, q(r, "container"), sig)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: id})
}

func (s *Server) podPause(pause bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := podRef(r)
		if err == nil {
			err = s.Pods.Pause(id, pause)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, 200, PodResult{ID: id})
	}
}

func toWirePM(pms []pod.PortMapping) []PortMapping {
	out := []PortMapping{}
	for _, pm := range pms {
		out = append(out, PortMapping{ContainerPort: string(pm.ContainerPort), HostPort: string(pm.HostPort), Protocol: pm.Protocol})
	}
	return out
}

func (s *Server) portMappings(w http.ResponseWriter, r *http.Request) {
	pms, err := s.Pods.PortMappings(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PortMappingList{PortMappings: toWirePM(pms)})
}

func (s *Server) portMappingsUpdate(w http.ResponseWriter, r *http.Request) {
	var pms []pod.PortMapping
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&pms); err != nil {
		s.fail(w, r, badParam("body must be a JSON array of port mappings: %v", err))
		return
	}
	var err error
	switch r.PathValue("action") {
	case "add":
		err = s.Pods.AddPortMappings(r.PathValue("id"), pms)
	case "delete":
		err = s.Pods.DeletePortMappings(r.PathValue("id"), pms)
	default:
		err = badParam("action must be add or delete (got %q)", r.PathValue("action"))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- containers ---

func ctrRef(r *http.Request) (string, error) { return need(r, "container", "id", "value", "name") }

func (s *Server) containerCreate(w http.ResponseWriter, r *http.Request) {
	id, err := podRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		s.fail(w, r, badParam("reading body: %v", err))
		return
	}
	spec, err := pod.DecodeContainerSpec(b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cid, err := s.Pods.CreateContainer(id, spec)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"ID": cid})
}

func (s *Server) containerStart(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err == nil {
		err = s.Pods.StartContainer(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, struct{}{})
}

func (s *Server) containerStop(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err == nil {
		err = s.Pods.StopContainer(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, struct{}{})
}

func (s *Server) containerKill(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sig, err := sigParam(r)
	if err == nil {
		err = s.Pods.KillContainer(r.Context(), id, sig)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, struct{}{})
}

func (s *Server) containerRemove(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err == nil {
		err = s.Pods.RemoveContainer(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerRename(w http.ResponseWriter, r *http.Request) {
	old, err := need(r, "oldName", "oleName", "container")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	nn, err := need(r, "newName")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, err := s.Pods.RenameContainer(old, nn)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: id})
}

func (s *Server) containerInfo(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ci, err := s.Pods.ContainerInfo(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, ci)
}

func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	tty, err := s.Pods.ContainerTty(id, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opt := pod.LogOptions{Stdout: boolParam(r, "stdout", false), Stderr: boolParam(r, "stderr", false), Follow: boolParam(r, "follow", false), Tail: -1}
	if !opt.Stdout && !opt.Stderr {
		opt.Stdout, opt.Stderr = true, true
	}
	if t := q(r, "tail"); t != "" && t != "all" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			s.fail(w, r, badParam("tail must be a non-negative number or all"))
			return
		}
		opt.Tail = n
	}
	if sv := q(r, "since"); sv != "" {
		if n, err := strconv.ParseInt(sv, 10, 64); err == nil {
			opt.Since = time.Unix(n, 0)
		} else if t, err := time.Parse(time.RFC3339Nano, sv); err == nil {
			opt.Since = t
		} else {
			s.fail(w, r, badParam("since must be unix seconds or RFC3339"))
			return
		}
	}
	ts := boolParam(r, "timestamps", false) || boolParam(r, "timestamp", false)
	w.Header().Set("Content-Type", "application/vnd.docker.raw-stream")
	w.WriteHeader(200)
	fl, _ := w.(http.Flusher)
	err = s.Pods.Logs(r.Context(), id, opt, func(e pod.LogEntry) error {
		data := e.Data
		if ts {
			data = append([]byte(e.Time.UTC().Format(time.RFC3339Nano)+" "), data...)
		}
		var err error
		if tty {
			_, err = w.Write(data)
		} else {
			err = writeFrame(w, e.Stream, data)
		}
		if fl != nil && opt.Follow {
			fl.Flush()
		}
		return err
	})
	if err != nil {
		s.Log.Debug("logs ended", "container", id, "err", err)
	}
}

func (s *Server) exitCode(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code, err := s.Pods.ExitCode(r.Context(), id, q(r, "exec", "execId"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, code)
}

// commitConfig is Docker's container config subset used by commit.
type commitConfig struct {
	User         string
	Env          []string
	Cmd          []string
	Entrypoint   []string
	WorkingDir   string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	Labels       map[string]string
	StopSignal   string
}

func (s *Server) containerCommit(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opt := pod.CommitOptions{Repo: q(r, "repo"), Tag: q(r, "tag"), Comment: q(r, "comment"), Author: q(r, "author")}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if len(strings.TrimSpace(string(b))) > 0 {
		var cc commitConfig
		if err := json.Unmarshal(b, &cc); err != nil {
			s.fail(w, r, badParam("commit body must be a container config object: %v", err))
			return
		}
		opt.Config = &pod.ImageConfig{Cmd: cc.Cmd, Entrypoint: cc.Entrypoint, Env: cc.Env, WorkingDir: cc.WorkingDir, User: cc.User,
			ExposedPorts: cc.ExposedPorts, Volumes: cc.Volumes, Labels: cc.Labels, StopSignal: cc.StopSignal}
	}
	img, err := s.Pods.Commit(r.Context(), id, opt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, PodResult{ID: img})
}

// --- attach / exec ---

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if q(r, "type") == "pod" {
		// original: type=pod&value=<pod> attaches to the pod's first container
		pi, err := s.Pods.PodInfo(id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if len(pi.Spec.Containers) == 0 {
			s.fail(w, r, badParam("pod %s has no container", id))
			return
		}
		id = pi.Spec.Containers[0].ContainerID
	}
	stdin := boolParam(r, "stdin", true)
	tty, err := s.Pods.ContainerTty(id, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	s.stream(w, r, tty, cancel, func() (sandbox.Stdio, func(), error) {
		st, _, release, err := s.Pods.Attach(ctx, id, "", stdin)
		return st, release, err
	})
}

func (s *Server) ttyResize(w http.ResponseWriter, r *http.Request) {
	id, err := ctrRef(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wd, err1 := strconv.Atoi(q(r, "w", "width"))
	ht, err2 := strconv.Atoi(q(r, "h", "height"))
	if err1 != nil || err2 != nil || wd <= 0 || ht <= 0 || wd > 65535 || ht > 65535 {
		s.fail(w, r, badParam("w and h must be positive numbers"))
		return
	}
	if err := s.Pods.Resize(r.Context(), id, q(r, "exec"), wd, ht); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, struct{}{})
}

// ParseCommand accepts a JSON array or a whitespace-separated command line.
func ParseCommand(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var cmd []string
		if err := json.Unmarshal([]byte(s), &cmd); err != nil {
			return nil, badParam("command must be a JSON array of strings: %v", err)
		}
		return cmd, nil
	}
	return strings.Fields(s), nil
}

func (s *Server) execCreate(w http.ResponseWriter, r *http.Request) {
	id := q(r, "container", "id")
	cmdStr := q(r, "command")
	tty := boolParam(r, "tty", false)
	var cmd []string
	if id == "" || cmdStr == "" {
		// also accept a JSON body {"container": ..., "command": [...], "tty": bool}
		var body struct {
			Container string   `json:"container"`
			Command   []string `json:"command"`
			Tty       bool     `json:"tty"`
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if len(strings.TrimSpace(string(b))) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				s.fail(w, r, badParam("exec body: %v", err))
				return
			}
		}
		if id == "" {
			id = body.Container
		}
		if cmdStr == "" {
			cmd = body.Command
		}
		tty = tty || body.Tty
	}
	if id == "" {
		s.fail(w, r, badParam("missing query parameter container"))
		return
	}
	if cmdStr != "" {
		c, err := ParseCommand(cmdStr)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		cmd = c
	}
	eid, err := s.Pods.ExecCreate(id, cmd, tty)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, eid)
}

func (s *Server) execStart(w http.ResponseWriter, r *http.Request) {
	eid, err := need(r, "exec", "execId")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cref := q(r, "container", "id")
	tty, err := s.Pods.ContainerTty(cref, eid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The exec runs before the 101 goes out, so a resize right after the
	// upgrade finds it, and a failure gets a proper status.
	ctx, cancel := context.WithCancel(r.Context())
	st, _, err := s.Pods.ExecStart(ctx, cref, eid)
	if err != nil {
		cancel()
		s.fail(w, r, err)
		return
	}
	s.stream(w, r, tty, cancel, func() (sandbox.Stdio, func(), error) {
		return st, func() {}, nil
	})
}

func (s *Server) execVM(w http.ResponseWriter, r *http.Request) {
	if _, err := podRef(r); err != nil {
		s.fail(w, r, err)
		return
	}
	s.fail(w, r, &pod.NotImplementedError{Msg: "execvm (a command in the sandbox itself, outside any container) is not offered by the agent protocol; use exec in a container"})
}

// --- images ---

func (s *Server) imgs(w http.ResponseWriter, r *http.Request) ImageService {
	if s.Images == nil {
		s.fail(w, r, &pod.NotImplementedError{Msg: "no image store is available in this daemon"})
		return nil
	}
	return s.Images
}

func (s *Server) imagesGet(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	list, err := is.List(boolParam(r, "all", false))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []string{}
	for _, im := range list {
		id := strings.TrimPrefix(im.ID, "sha256:")
		if len(im.RepoTags) == 0 {
			out = append(out, fmt.Sprintf("<none>:<none>:%s:%d:%d", id, im.Created, im.Size))
		}
		for _, rt := range im.RepoTags {
			repo, tag := rt, "latest"
			if i := strings.LastIndexByte(rt, ':'); i > strings.LastIndexByte(rt, '/') {
				repo, tag = rt[:i], rt[i+1:]
			}
			out = append(out, fmt.Sprintf("%s:%s:%s:%d:%d", repo, tag, id, im.Created, im.Size))
		}
	}
	writeJSON(w, 200, ImagesList{ImagesList: out})
}

func authHeader(r *http.Request) (*AuthConfig, error) {
	var a *AuthConfig
	if err := headerJSON(r, "X-Registry-Auth", "an AuthConfig", &a); err != nil {
		return nil, err
	}
	return a, nil
}

// headerJSON decodes a base64 (URL or standard alphabet) JSON header into v;
// an absent header leaves v alone.
func headerJSON(r *http.Request, name, what string, v any) error {
	h := r.Header.Get(name)
	if h == "" {
		return nil
	}
	b, err := base64.URLEncoding.DecodeString(h)
	if err != nil {
		b, err = base64.StdEncoding.DecodeString(h)
	}
	if err != nil {
		return badParam("%s is not base64: %v", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return badParam("%s is not %s: %v", name, what, err)
	}
	return nil
}

// progressStream writes Docker JSON messages, one per line, flushing each.
type progressStream struct {
	w   http.ResponseWriter
	enc *json.Encoder
}

func newProgressStream(w http.ResponseWriter) *progressStream {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	return &progressStream{w: w, enc: json.NewEncoder(w)}
}

func (p *progressStream) send(m JSONMessage) {
	p.enc.Encode(m)
	if f, ok := p.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (p *progressStream) progress(pr Progress) { p.send(progressMessage(pr)) }

// progressMessage is a progress event as a Docker JSON message.
func progressMessage(pr Progress) JSONMessage {
	m := JSONMessage{Status: pr.Status, ID: pr.ID, Progress: pr.Progress}
	if pr.Current != 0 || pr.Total != 0 {
		m.ProgressDetail = &ProgressDetail{Current: pr.Current, Total: pr.Total}
	}
	if pr.Error != "" {
		m.Error, m.ErrorDetail = pr.Error, &ErrorDetail{Message: pr.Error}
	}
	return m
}

func (p *progressStream) fail(err error) {
	p.send(JSONMessage{Error: err.Error(), ErrorDetail: &ErrorDetail{Message: err.Error()}})
}

func (s *Server) imageCreate(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	ref, err := need(r, "imageName", "fromImage")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if t := q(r, "tag"); t != "" && !strings.Contains(ref, "@") {
		ref += ":" + t
	}
	auth, err := authHeader(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ps := newProgressStream(w)
	ps.send(JSONMessage{Status: "Pulling " + ref})
	// The store's last line says "Downloaded newer image" or "Image is up to date".
	if err := is.Pull(r.Context(), ref, auth, ps.progress); err != nil {
		ps.fail(err)
	}
}

func (s *Server) imagePush(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	remote, err := need(r, "remote", "imageName", "name")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ref := remote
	if t := q(r, "tag"); t != "" {
		ref += ":" + t
	}
	auth, err := authHeader(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The store's last line is Docker's "<tag>: digest: sha256:... size: N".
	ps := newProgressStream(w)
	if err := is.Push(r.Context(), ref, ref, auth, ps.progress); err != nil {
		ps.fail(err)
	}
}

func (s *Server) imageRemove(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	ref, err := need(r, "imageId", "image", "name")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items, err := is.Remove(ref, boolParam(r, "force", false), boolParam(r, "noprune", false), s.Pods.ImageInUse)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if items == nil {
		items = []RemoveItem{}
	}
	writeJSON(w, 200, RemoveResult{ImagesList: items})
}

func (s *Server) imageBuild(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	if q(r, "remote") != "" {
		s.fail(w, r, &pod.NotImplementedError{Msg: "building from a remote URL is not supported; send the context as a tar body"})
		return
	}
	opt := BuildOptions{Dockerfile: q(r, "dockerfile"), Tags: r.URL.Query()["t"], NoCache: boolParam(r, "nocache", false),
		Pull: boolParam(r, "pull", false), Quiet: boolParam(r, "q", false)}
	if ba := q(r, "buildargs"); ba != "" {
		if err := json.Unmarshal([]byte(ba), &opt.BuildArgs); err != nil {
			s.fail(w, r, badParam("buildargs must be a JSON object of strings: %v", err))
			return
		}
	}
	auths, err := registryConfig(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opt.Auths = auths
	// rm (default) removes a step's container once it is committed; forcerm
	// also removes the container of a failed step, which is kept otherwise.
	rm, forcerm := boolParam(r, "rm", true), boolParam(r, "forcerm", false)
	run := s.Pods.BuildRunner(pod.BuildRunOptions{KeepOnSuccess: !rm && !forcerm, KeepOnFailure: !forcerm})
	// The stream starts with the first output, so errors before it (no
	// Dockerfile, a bad context) still get a proper status.
	bs := &buildStream{w: w}
	id, err := is.Build(r.Context(), r.Body, opt, run, bs, bs.progress)
	if err != nil {
		if ps := bs.started(); ps != nil {
			bs.mu.Lock()
			ps.fail(err)
			bs.mu.Unlock()
			return
		}
		s.fail(w, r, err)
		return
	}
	aux, _ := json.Marshal(BuildResult{ID: id})
	bs.send(JSONMessage{Aux: aux})
}

// registryConfig decodes X-Registry-Config: base64 JSON of registry -> AuthConfig.
func registryConfig(r *http.Request) (map[string]AuthConfig, error) {
	var m map[string]AuthConfig
	err := headerJSON(r, "X-Registry-Config", "a JSON object of AuthConfig per registry", &m)
	return m, err
}

// buildStream is a build's output: each write is a {"stream": ...} line and
// pull progress a status line, on a progress stream opened at the first one.
type buildStream struct {
	w  http.ResponseWriter
	mu sync.Mutex
	ps *progressStream
}

func (b *buildStream) started() *progressStream {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ps
}

func (b *buildStream) send(m JSONMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ps == nil {
		b.ps = newProgressStream(b.w)
	}
	b.ps.send(m)
}

func (b *buildStream) Write(p []byte) (int, error) {
	b.send(JSONMessage{Stream: string(p)})
	return len(p), nil
}

func (b *buildStream) progress(pr Progress) { b.send(progressMessage(pr)) }

func (s *Server) imageLoad(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	names, err := is.Load(r.Context(), r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ps := newProgressStream(w)
	for _, n := range names {
		ps.send(JSONMessage{Stream: "Loaded image: " + n + "\n"})
	}
}

func (s *Server) imageSave(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	v := r.URL.Query()
	refs := append(append(append([]string{}, v["imageId"]...), v["names"]...), v["image"]...)
	if len(refs) == 0 {
		s.fail(w, r, badParam("missing query parameter imageId"))
		return
	}
	// Write into a buffer-less pipe only after the refs resolved: check first
	// by saving to a counting writer would double the work, so errors after
	// the first byte end the stream (the client sees a truncated tar).
	pw := &lazyWriter{w: w}
	if err := is.Save(r.Context(), pw, refs); err != nil {
		if !pw.started {
			s.fail(w, r, err)
			return
		}
		s.Log.Error("image save failed mid-stream", "err", err)
	}
}

type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(b []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", "application/x-tar")
		l.w.WriteHeader(200)
	}
	return l.w.Write(b)
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	is := s.imgs(w, r)
	if is == nil {
		return
	}
	var a AuthConfig
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&a); err != nil {
		s.fail(w, r, badParam("auth body must be an AuthConfig object: %v", err))
		return
	}
	st, err := is.CheckAuth(r.Context(), a)
	if err != nil {
		code := statusOf(err)
		if code == 500 {
			code = http.StatusUnauthorized
		}
		writeError(w, code, err.Error())
		return
	}
	// Accepted credentials are kept (in the daemon's state): pulls and pushes
	// to that registry without X-Registry-Auth use them, as after docker login.
	if err := is.SaveAuth(a); err != nil {
		s.fail(w, r, fmt.Errorf("the registry accepted the credentials but storing them failed: %w", err))
		return
	}
	writeJSON(w, 200, AuthResult{Status: st})
}
