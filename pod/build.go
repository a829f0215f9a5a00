package pod

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// BuildOptions are /image/build's options the builder honours.
type BuildOptions struct {
	Dockerfile string
	Tags       []string
}

// Build runs a Dockerfile from a tar build context (uncompressed or gzip).
// Each RUN and COPY/ADD runs in a throw-away pod of the current image and
// is committed through the agent, so builds use the same sandboxes as
// pods. Supported: FROM, RUN, CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL,
// EXPOSE, VOLUME, STOPSIGNAL, MAINTAINER, ARG (recorded, no substitution),
// COPY/ADD of local files (no URLs, no archive extraction, no --from).
func (d *Daemon) Build(ctx context.Context, contextTar io.Reader, opt BuildOptions, out func(string)) (string, error) {
	if d.img == nil {
		return "", &NotImplementedError{Msg: "no image store is available in this daemon"}
	}
	if len(opt.Tags) > 1 {
		return "", specErr("bad parameter: one -t tag per build is supported")
	}
	files, err := readContext(contextTar)
	if err != nil {
		return "", err
	}
	df := opt.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	src, ok := files[path.Clean(df)]
	if !ok {
		return "", specErr("bad parameter: no %s in the build context", df)
	}
	steps, err := parseDockerfile(src.data)
	if err != nil {
		return "", err
	}
	var cur string
	var cfg ImageConfig
	author := ""
	for i, st := range steps {
		out(fmt.Sprintf("Step %d/%d : %s\n", i+1, len(steps), st.raw))
		if cur == "" && st.cmd != "FROM" && st.cmd != "ARG" {
			return "", specErr("bad parameter: the first instruction must be FROM (got %s)", st.cmd)
		}
		switch st.cmd {
		case "FROM":
			im, err := d.resolveImage(st.args)
			if err != nil {
				return "", err
			}
			cur, cfg = im.ID, im.Config
		case "ARG":
		case "MAINTAINER":
			author = st.args
		case "ENV":
			for k, v := range keyValues(st.args) {
				cfg.Env = setEnv(cfg.Env, k, v)
			}
		case "LABEL":
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			for k, v := range keyValues(st.args) {
				cfg.Labels[k] = v
			}
		case "WORKDIR":
			if !path.IsAbs(st.args) {
				base := cfg.WorkingDir
				if base == "" {
					base = "/"
				}
				st.args = path.Join(base, st.args)
			}
			cfg.WorkingDir = st.args
		case "USER":
			cfg.User = st.args
		case "STOPSIGNAL":
			cfg.StopSignal = st.args
		case "CMD":
			cfg.Cmd = execForm(st.args)
		case "ENTRYPOINT":
			cfg.Entrypoint = execForm(st.args)
		case "EXPOSE":
			if cfg.ExposedPorts == nil {
				cfg.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range strings.Fields(st.args) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				cfg.ExposedPorts[p] = struct{}{}
			}
		case "VOLUME":
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			for _, v := range execFormOrFields(st.args) {
				cfg.Volumes[v] = struct{}{}
			}
		case "RUN":
			id, err := d.buildStep(ctx, cur, cfg, author, execForm(st.args), nil, out)
			if err != nil {
				return "", err
			}
			cur = id
		case "COPY", "ADD":
			fs, err := copyFiles(files, st.args, cfg.WorkingDir)
			if err != nil {
				return "", err
			}
			id, err := d.buildStep(ctx, cur, cfg, author, nil, fs, out)
			if err != nil {
				return "", err
			}
			cur = id
		default:
			return "", specErr("bad parameter: Dockerfile instruction %s is not supported", st.cmd)
		}
	}
	// the final image carries the final config (and the tag)
	var repo, tag string
	if len(opt.Tags) == 1 {
		repo, tag = opt.Tags[0], "latest"
		if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
			repo, tag = repo[:i], repo[i+1:]
		}
	}
	var empty bytes.Buffer
	tar.NewWriter(&empty).Close()
	id, err := d.img.Commit(ctx, cur, &empty, CommitOptions{Repo: repo, Tag: tag, Author: author, Comment: "build", Config: &cfg})
	if err != nil {
		return "", err
	}
	return id, nil
}

func setEnv(env []string, k, v string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// buildStep runs cmd (or only places files) in a pod of image cur and commits it.
func (d *Daemon) buildStep(ctx context.Context, cur string, cfg ImageConfig, author string, cmd []string, files []buildFile, out func(string)) (string, error) {
	spec := &PodSpec{ID: "build-" + strings.ToLower(RandomLetters(10))}
	c := ContainerSpec{Image: cur, Name: spec.ID + "-step", Entrypoint: []string{"/bin/sh", "-c", "exec sleep 2147483647"}, Workdir: cfg.WorkingDir}
	for _, e := range cfg.Env {
		k, v, _ := strings.Cut(e, "=")
		c.Envs = append(c.Envs, EnvVar{Env: k, Value: v})
	}
	for i, f := range files {
		name := fmt.Sprintf("f%d", i)
		spec.Files = append(spec.Files, FileSpec{Name: name, Encoding: "base64", Content: base64.StdEncoding.EncodeToString(f.data)})
		c.Files = append(c.Files, FileRef{Path: f.dest, Filename: name, Perm: fmt.Sprintf("%04o", f.mode&0o777)})
	}
	spec.Containers = []ContainerSpec{c}
	id, err := d.CreatePod(spec)
	if err != nil {
		return "", err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.RemovePod(rctx, id)
	}()
	if err := d.StartPod(ctx, id); err != nil {
		return "", fmt.Errorf("build step sandbox: %w", err)
	}
	cname := c.Name
	if len(cmd) > 0 {
		eid, err := d.ExecCreate(cname, cmd, false)
		if err != nil {
			return "", err
		}
		st, _, err := d.ExecStart(ctx, cname, eid)
		if err != nil {
			return "", err
		}
		done := make(chan struct{}, 2)
		pump := func(r io.Reader) {
			defer func() { done <- struct{}{} }()
			if r == nil {
				return
			}
			br := bufio.NewReader(r)
			for {
				line, err := br.ReadString('\n')
				if line != "" {
					out(line)
				}
				if err != nil {
					return
				}
			}
		}
		if st.Stdin != nil {
			st.Stdin.Close()
		}
		go pump(st.Stdout)
		go pump(st.Stderr)
		<-done
		<-done
		code, err := d.ExitCode(ctx, cname, eid)
		if err != nil {
			return "", err
		}
		if code != 0 {
			return "", specErr("bad parameter: build step %q returned a non-zero code: %d", strings.Join(cmd, " "), code)
		}
	}
	return d.Commit(ctx, cname, CommitOptions{Author: author, Comment: "build step", Config: &cfg})
}

type ctxFile struct {
	data []byte
	mode int64
	dir  bool
}

type buildFile struct {
	dest string
	data []byte
	mode int64
}

const maxContext = 256 << 20

func readContext(r io.Reader) (map[string]ctxFile, error) {
	br := bufio.NewReader(io.LimitReader(r, maxContext+1))
	if b, _ := br.Peek(2); len(b) == 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, specErr("bad parameter: build context: %v", err)
		}
		br = bufio.NewReader(zr)
	}
	tr := tar.NewReader(br)
	files := map[string]ctxFile{}
	total := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, specErr("bad parameter: build context must be a tar (identity or gzip): %v", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch h.Typeflag {
		case tar.TypeDir:
			files[name] = ctxFile{dir: true, mode: h.Mode}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, specErr("bad parameter: build context: %v", err)
			}
			total += len(b)
			if total > maxContext {
				return nil, specErr("bad parameter: build context larger than %d MiB", maxContext>>20)
			}
			files[name] = ctxFile{data: b, mode: h.Mode}
		}
	}
	return files, nil
}

type step struct{ cmd, args, raw string }

func parseDockerfile(b []byte) ([]step, error) {
	var steps []step
	var cur strings.Builder
	flush := func() error {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(line, " ")
		steps = append(steps, step{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), raw: line})
		return nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		flush()
	}
	flush()
	if len(steps) == 0 {
		return nil, specErr("bad parameter: empty Dockerfile")
	}
	return steps, nil
}

// execForm parses ["a","b"] or wraps a shell form in /bin/sh -c.
func execForm(s string) []string {
	if strings.HasPrefix(s, "[") {
		var v []string
		if json.Unmarshal([]byte(s), &v) == nil {
			return v
		}
	}
	return []string{"/bin/sh", "-c", s}
}

func execFormOrFields(s string) []string {
	if strings.HasPrefix(s, "[") {
		var v []string
		if json.Unmarshal([]byte(s), &v) == nil {
			return v
		}
	}
	return strings.Fields(s)
}

// keyValues parses "k=v k2=\"v 2\"" or the legacy "k v".
func keyValues(s string) map[string]string {
	out := map[string]string{}
	if !strings.Contains(strings.SplitN(s, " ", 2)[0], "=") {
		k, v, _ := strings.Cut(s, " ")
		out[k] = strings.TrimSpace(v)
		return out
	}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " \t")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				v, s = rest[1:], ""
			} else {
				v, s = rest[1:1+end], rest[2+end:]
			}
		} else {
			v, s, _ = strings.Cut(rest, " ")
		}
		out[k] = v
	}
	return out
}

func copyFiles(files map[string]ctxFile, args, workdir string) ([]buildFile, error) {
	parts := execFormOrFields(args)
	var clean []string
	for _, p := range parts {
		if strings.HasPrefix(p, "--") {
			return nil, specErr("bad parameter: COPY/ADD flag %s is not supported", p)
		}
		clean = append(clean, p)
	}
	if len(clean) < 2 {
		return nil, specErr("bad parameter: COPY needs a source and a destination")
	}
	dest := clean[len(clean)-1]
	if !path.IsAbs(dest) {
		if workdir == "" {
			workdir = "/"
		}
		dest = path.Join(workdir, dest) + map[bool]string{true: "/", false: ""}[strings.HasSuffix(dest, "/")]
	}
	srcs := clean[:len(clean)-1]
	var out []buildFile
	for _, s := range srcs {
		if strings.Contains(s, "://") {
			return nil, specErr("bad parameter: ADD from a URL is not supported")
		}
		s = path.Clean(strings.TrimPrefix(s, "/"))
		if s == ".." || strings.HasPrefix(s, "../") {
			return nil, specErr("bad parameter: COPY source %s is outside the context", s)
		}
		f, ok := files[s]
		isDir := s == "." || ok && f.dir
		if !ok && !isDir {
			// a directory may only be implied by its files
			for n := range files {
				if strings.HasPrefix(n, s+"/") {
					isDir = true
					break
				}
			}
			if !isDir {
				return nil, specErr("bad parameter: COPY source %s not found in the build context", s)
			}
		}
		if !isDir {
			d := dest
			if strings.HasSuffix(dest, "/") || len(srcs) > 1 {
				d = path.Join(dest, path.Base(s))
			}
			out = append(out, buildFile{dest: d, data: f.data, mode: f.mode})
			continue
		}
		var names []string
		for n, cf := range files {
			if cf.dir {
				continue
			}
			if s == "." || strings.HasPrefix(n, s+"/") {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			rel := n
			if s != "." {
				rel = strings.TrimPrefix(n, s+"/")
			}
			out = append(out, buildFile{dest: path.Join(dest, rel), data: files[n].data, mode: files[n].mode})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("COPY matched no files")
	}
	return out, nil
}
