package api

// images.go owns the image routes, served by the ImageService (501 without
// one): /images/get, /image/create (pull), push, DELETE /image, build, load,
// save and /auth, and the Docker JSON progress stream they answer with.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/hyperhq/hyperd-go/pod"
)

// images is the image store, or the 501 of a daemon without one.
func (s *Server) images() (ImageService, error) {
	if s.Images == nil {
		return nil, &pod.NotImplementedError{Msg: "no image store is available in this daemon"}
	}
	return s.Images, nil
}

// imagesGet answers the original's "repo:tag:id:created:size" lines.
func (s *Server) imagesGet(r *http.Request) (any, error) {
	is, err := s.images()
	if err != nil {
		return nil, err
	}
	list, err := is.List(boolParam(r, "all", false))
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, im := range list {
		id := strings.TrimPrefix(im.ID, "sha256:")
		if len(im.RepoTags) == 0 {
			out = append(out, fmt.Sprintf("<none>:<none>:%s:%d:%d", id, im.Created, im.Size))
		}
		for _, rt := range im.RepoTags {
			repo, tag := SplitRepoTag(rt)
			if tag == "" {
				tag = "latest"
			}
			out = append(out, fmt.Sprintf("%s:%s:%s:%d:%d", repo, tag, id, im.Created, im.Size))
		}
	}
	return ImagesList{ImagesList: out}, nil
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

// fail ends the stream with an error message: the status went out already.
func (p *progressStream) fail(err error) {
	p.send(JSONMessage{Error: err.Error(), ErrorDetail: &ErrorDetail{Message: err.Error()}})
}

// transfer reads what a pull or a push needs before its progress stream
// opens: the image store, the reference (names, then any tag through
// withTag) and X-Registry-Auth. On an error it answers the request and
// returns a nil store.
func (s *Server) transfer(w http.ResponseWriter, r *http.Request, withTag func(ref, tag string) string, names ...string) (ImageService, string, *AuthConfig) {
	is, err := s.images()
	var ref string
	if err == nil {
		ref, err = need(r, names...)
	}
	var auth *AuthConfig
	if err == nil {
		auth, err = authHeader(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return nil, "", nil
	}
	if t := q(r, "tag"); t != "" {
		ref = withTag(ref, t)
	}
	return is, ref, auth
}

func (s *Server) imageCreate(w http.ResponseWriter, r *http.Request) {
	is, ref, auth := s.transfer(w, r, func(ref, tag string) string {
		if strings.Contains(ref, "@") {
			return ref // a digest pins it
		}
		return ref + ":" + tag
	}, "imageName", "fromImage")
	if is == nil {
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
	is, ref, auth := s.transfer(w, r, func(ref, tag string) string { return ref + ":" + tag }, "remote", "imageName", "name")
	if is == nil {
		return
	}
	// The store's last line is Docker's "<tag>: digest: sha256:... size: N".
	ps := newProgressStream(w)
	if err := is.Push(r.Context(), ref, ref, auth, ps.progress); err != nil {
		ps.fail(err)
	}
}

func (s *Server) imageRemove(r *http.Request) (any, error) {
	is, err := s.images()
	if err != nil {
		return nil, err
	}
	ref, err := need(r, "imageId", "image", "name")
	if err != nil {
		return nil, err
	}
	items, err := is.Remove(ref, boolParam(r, "force", false), boolParam(r, "noprune", false), s.Pods.ImageInUse)
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []RemoveItem{}
	}
	return RemoveResult{ImagesList: items}, nil
}

// buildOptions reads dockerfile, t (repeated), nocache, pull, q, buildargs
// and X-Registry-Config.
func buildOptions(r *http.Request) (BuildOptions, error) {
	opt := BuildOptions{Dockerfile: q(r, "dockerfile"), Tags: all(r, "t"), NoCache: boolParam(r, "nocache", false),
		Pull: boolParam(r, "pull", false), Quiet: boolParam(r, "q", false)}
	if _, err := jsonParam(r, "buildargs", "a JSON object of strings", &opt.BuildArgs); err != nil {
		return opt, err
	}
	auths, err := registryConfig(r)
	opt.Auths = auths
	return opt, err
}

func (s *Server) imageBuild(w http.ResponseWriter, r *http.Request) {
	is, err := s.images()
	if err == nil && q(r, "remote") != "" {
		err = &pod.NotImplementedError{Msg: "building from a remote URL is not supported; send the context as a tar body"}
	}
	var opt BuildOptions
	if err == nil {
		opt, err = buildOptions(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
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
	is, err := s.images()
	var names []string
	if err == nil {
		names, err = is.Load(r.Context(), r.Body)
	}
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
	is, err := s.images()
	refs := all(r, "imageId", "names", "image")
	if err == nil && len(refs) == 0 {
		err = badParam("missing query parameter imageId")
	}
	if err != nil {
		s.fail(w, r, err)
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

// lazyWriter sends the 200 and the tar content type at the first byte.
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

// auth checks credentials with the registry and keeps those it accepts; a
// refusal is 401.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	is, err := s.images()
	var a AuthConfig
	if err == nil {
		err = jsonBody(r, "auth body must be an AuthConfig object", &a)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := is.CheckAuth(r.Context(), a)
	if err != nil {
		code := statusOf(err)
		if code == http.StatusInternalServerError {
			code = http.StatusUnauthorized
		}
		s.failWith(w, r, code, err)
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
