package api

// containers.go owns the container routes: /container/create, start, stop,
// kill, remove, rename, info, logs, commit, and the exit code of a
// container or an exec (/exitcode). Attach and resize are in streams.go.

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/hyperhq/hyperd-go/pod"
)

func (s *Server) containerCreate(r *http.Request) (any, error) {
	id, err := podRef(r)
	if err != nil {
		return nil, err
	}
	b, err := readBody(r, specLimit)
	if err != nil {
		return nil, err
	}
	spec, err := pod.DecodeContainerSpec(b)
	if err != nil {
		return nil, err
	}
	cid, err := s.Pods.CreateContainer(id, spec)
	if err != nil {
		return nil, err
	}
	return map[string]string{"ID": cid}, nil
}

// onContainer does a call on the container named by the request; the
// answer has an empty body.
func (s *Server) onContainer(r *http.Request, do func(id string) error) (any, error) {
	id, err := ctrRef(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, do(id)
}

func (s *Server) containerStart(r *http.Request) (any, error) {
	return s.onContainer(r, func(id string) error { return s.Pods.StartContainer(r.Context(), id) })
}

func (s *Server) containerStop(r *http.Request) (any, error) {
	return s.onContainer(r, func(id string) error { return s.Pods.StopContainer(r.Context(), id) })
}

func (s *Server) containerKill(r *http.Request) (any, error) {
	return s.onContainer(r, func(id string) error {
		sig, err := sigParam(r)
		if err != nil {
			return err
		}
		return s.Pods.KillContainer(r.Context(), id, sig)
	})
}

func (s *Server) containerRemove(r *http.Request) (any, error) {
	return s.onContainer(r, func(id string) error { return s.Pods.RemoveContainer(r.Context(), id) })
}

func (s *Server) containerRename(r *http.Request) (any, error) {
	old, err := need(r, "oldName", "oleName", "container")
	if err != nil {
		return nil, err
	}
	nn, err := need(r, "newName")
	if err != nil {
		return nil, err
	}
	id, err := s.Pods.RenameContainer(old, nn)
	if err != nil {
		return nil, err
	}
	return PodResult{ID: id}, nil
}

func (s *Server) containerInfo(r *http.Request) (any, error) {
	id, err := ctrRef(r)
	if err != nil {
		return nil, err
	}
	return s.Pods.ContainerInfo(id)
}

// logOptions reads stdout, stderr (neither: both), follow, tail (a number
// or all), since (unix seconds or RFC3339) and timestamps.
func logOptions(r *http.Request) (opt pod.LogOptions, timestamps bool, err error) {
	opt = pod.LogOptions{Stdout: boolParam(r, "stdout", false), Stderr: boolParam(r, "stderr", false), Follow: boolParam(r, "follow", false), Tail: -1}
	if !opt.Stdout && !opt.Stderr {
		opt.Stdout, opt.Stderr = true, true
	}
	if t := q(r, "tail"); t != "" && t != "all" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return opt, false, badParam("tail must be a non-negative number or all")
		}
		opt.Tail = n
	}
	if sv := q(r, "since"); sv != "" {
		if n, err := strconv.ParseInt(sv, 10, 64); err == nil {
			opt.Since = time.Unix(n, 0)
		} else if t, err := time.Parse(time.RFC3339Nano, sv); err == nil {
			opt.Since = t
		} else {
			return opt, false, badParam("since must be unix seconds or RFC3339")
		}
	}
	return opt, boolParam(r, "timestamps", false) || boolParam(r, "timestamp", false), nil
}

// containerLogs streams the log: raw bytes with a tty, Docker frames
// without (see streams.go).
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
	opt, ts, err := logOptions(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
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

func (s *Server) exitCode(r *http.Request) (any, error) {
	id, err := ctrRef(r)
	if err != nil {
		return nil, err
	}
	return s.Pods.ExitCode(r.Context(), id, q(r, "exec", "execId"))
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

func (s *Server) containerCommit(r *http.Request) (any, error) {
	id, err := ctrRef(r)
	if err != nil {
		return nil, err
	}
	repo, tag, err := commitName(q(r, "repo"), q(r, "tag"))
	if err != nil {
		return nil, err
	}
	opt := pod.CommitOptions{Repo: repo, Tag: tag, Comment: q(r, "comment"), Author: q(r, "author")}
	var cc commitConfig
	if found, err := optionalJSONBody(r, "commit body must be a container config object", &cc); err != nil {
		return nil, err
	} else if found {
		opt.Config = &pod.ImageConfig{Cmd: cc.Cmd, Entrypoint: cc.Entrypoint, Env: cc.Env, WorkingDir: cc.WorkingDir, User: cc.User,
			ExposedPorts: cc.ExposedPorts, Volumes: cc.Volumes, Labels: cc.Labels, StopSignal: cc.StopSignal}
	}
	img, err := s.Pods.Commit(r.Context(), id, opt)
	if err != nil {
		return nil, err
	}
	return PodResult{ID: img}, nil
}

// commitName reads commit's repo and tag as Docker does (moby's
// httputils.RepoTagReference): repo may carry its tag (host:5000/ns/name:v1),
// a tag parameter replaces it, neither means latest (left to the store), a
// digest is refused. It returns the repository without its tag and the tag
// apart, as the image store assembles them. A colon before the last slash is
// a registry port, never a tag. A tag without repo is left for the store to
// refuse.
func commitName(repo, tag string) (string, string, error) {
	if repo == "" {
		return "", tag, nil
	}
	if strings.Contains(repo, "@") {
		return "", "", badParam("repo %q: cannot commit to a digest reference", repo)
	}
	base, own := repo, ""
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		base, own = repo[:i], repo[i+1:]
	}
	if _, err := name.NewRepository(base); err != nil {
		return "", "", badParam("repo %q: %v", repo, err)
	}
	if tag == "" {
		tag = own
	}
	if tag != "" {
		if _, err := name.NewTag(base + ":" + tag); err != nil {
			return "", "", badParam("tag %q: %v", tag, err)
		}
	}
	return base, tag, nil
}
