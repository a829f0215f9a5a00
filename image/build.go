// This file owns Dockerfile builds: Build, the builder and its step
// dispatch, FROM, variable expansion, the layer cache key, committing a
// step and RUN steps (run through the daemon's RunFunc). COPY and ADD are
// buildcopy.go's, the build context buildctx.go's.

package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/hyperhq/hyperd-go/image/dockerfile"
)

// RunFunc runs cmd in a container of the image rootfsImageID and returns the
// container's changes as an uncompressed tar using OCI whiteouts; the command's
// output goes to out as it is produced. A non-zero exit is an error. The daemon's
// RunFunc is pod.Daemon.BuildRunner: a throw-away pod on the sandbox driver whose
// changes the agent streams; it also decides what happens to the step's container
// (POST /image/build rm, forcerm). Closing the layer ends the step.
type RunFunc func(ctx context.Context, rootfsImageID string, cmd []string, env []string, workdir, user string, out io.Writer) (layer io.ReadCloser, err error)

// BuildOptions are the POST /image/build parameters (rm and forcerm belong to the RunFunc).
type BuildOptions struct {
	Dockerfile string            // path inside the context; "Dockerfile" when empty
	Tags       []string          // t
	BuildArgs  map[string]string // buildargs
	NoCache    bool              // nocache
	Pull       bool              // pull: pull FROM images even when present
	Quiet      bool              // q: print only the final image id
	Auth       *AuthConfig       // for FROM pulls (any registry)
	// Auths are X-Registry-Config's credentials per registry for FROM pulls;
	// without a match, Auth and then the credentials saved by SaveAuth are used.
	Auths    map[string]AuthConfig
	Progress func(Progress) // FROM pull progress
}

// Build builds an image from a tar build context (identity, gzip, bzip2, xz or zstd)
// holding a Dockerfile. RUN steps are executed by run. Every step is cached in the
// store, keyed by its parent image, the instruction after substitution and, for
// COPY/ADD, the content of the files.
func (s *Store) Build(ctx context.Context, buildContext io.Reader, opts BuildOptions, run RunFunc, out io.Writer) (Image, error) {
	if out == nil {
		out = io.Discard
	}
	runOut := out
	if opts.Quiet {
		// q: only the final id; RUN output and FROM pull progress are dropped.
		runOut, opts.Progress = io.Discard, nil
	}
	say := func(format string, a ...any) {
		if !opts.Quiet {
			fmt.Fprintf(out, format, a...)
		}
	}
	tags := make([]string, 0, len(opts.Tags))
	for _, t := range opts.Tags {
		c, err := canonical(t)
		if err != nil || strings.Contains(c, "@") {
			return Image{}, fmt.Errorf("build: invalid tag %q: %w", t, ErrInvalid)
		}
		tags = append(tags, c)
	}
	dir, err := os.MkdirTemp(s.tmpDir(), "build-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(dir)
	ctxDir := filepath.Join(dir, "context")
	if err := os.Mkdir(ctxDir, 0o700); err != nil {
		return Image{}, err
	}
	cr, err := decompressContext(ctx, buildContext)
	if err != nil {
		return Image{}, fmt.Errorf("build context: %v: %w", err, ErrInvalid)
	}
	modes, err := extractContext(ctxDir, cr)
	if cerr := cr.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%v: %w", cerr, ErrInvalid)
	}
	if err != nil {
		return Image{}, fmt.Errorf("build context: %w", err)
	}
	root, err := os.OpenRoot(ctxDir)
	if err != nil {
		return Image{}, err
	}
	defer root.Close()
	dfName := opts.Dockerfile
	if dfName == "" {
		dfName = "Dockerfile"
	}
	df, err := root.ReadFile(path.Clean("/" + dfName)[1:])
	if err != nil {
		return Image{}, fmt.Errorf("build: cannot read %s from the build context: %v: %w", dfName, err, ErrInvalid)
	}
	ins, err := dockerfile.Parse(bytes.NewReader(df))
	if err != nil {
		return Image{}, fmt.Errorf("build: %v: %w", err, ErrInvalid)
	}
	if err := applyDockerignore(root); err != nil {
		return Image{}, fmt.Errorf("build: %v: %w", err, ErrInvalid)
	}
	b := &builder{s: s, ctx: ctx, opts: opts, run: run, out: runOut, root: root, ctxDir: ctxDir, tmp: dir,
		modes: modes, args: map[string]string{}, say: say}
	for i, in := range ins {
		say("Step %d/%d : %s\n", i+1, len(ins), in.Original)
		if err := b.step(in); err != nil {
			return Image{}, fmt.Errorf("build: step %d (%s): %w", i+1, in.Original, err)
		}
		if b.img != nil {
			say(" ---> %s\n", shortID(b.img.ID))
		}
	}
	if b.img == nil {
		return Image{}, fmt.Errorf("build: the Dockerfile produced no image (no FROM, or FROM scratch with nothing else): %w", ErrInvalid)
	}
	if len(tags) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			// an untagged result can be removed while the build runs: never
			// tag an image that is gone (its blobs may be too)
			if tx.Bucket(bImages).Get([]byte(b.img.ID)) == nil {
				return fmt.Errorf("build: image %s was removed before it could be tagged: %w", shortID(b.img.ID), ErrConflict)
			}
			for _, t := range tags {
				if err := tx.Bucket(bRefs).Put([]byte(t), []byte(b.img.ID)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return Image{}, err
		}
	}
	say("Successfully built %s\n", shortID(b.img.ID))
	for _, t := range tags {
		say("Successfully tagged %s\n", familiar(t))
	}
	if opts.Quiet {
		fmt.Fprintln(out, b.img.ID)
	}
	return s.Get(b.img.ID)
}

type builder struct {
	s       *Store
	ctx     context.Context
	opts    BuildOptions
	run     RunFunc
	out     io.Writer // RUN output
	root    *os.Root
	ctxDir  string
	modes   map[string]int64 // the context's tar modes by path (the host copy is plain)
	tmp     string
	say     func(string, ...any)
	img     *imageRec // current image; nil before FROM or on scratch
	scratch bool
	started bool
	args    map[string]string // declared ARGs in scope with their values
	globals map[string]string // ARGs declared before the first FROM
	argList []string
}

func (b *builder) lookup(env []string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for i := len(env) - 1; i >= 0; i-- {
			if n, v, _ := strings.Cut(env[i], "="); n == k {
				return v, true
			}
		}
		v, ok := b.args[k]
		return v, ok
	}
}

func (b *builder) env() []string {
	if b.img == nil {
		return nil
	}
	return b.img.Config.Env
}

func (b *builder) expand(s string, esc rune) (string, error) {
	return dockerfile.Expand(s, esc, b.lookup(b.env()))
}

func (b *builder) expandAll(in []string, esc rune) ([]string, error) {
	out := make([]string, len(in))
	for i, a := range in {
		v, err := b.expand(a, esc)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (b *builder) step(in dockerfile.Instruction) error {
	if in.Cmd != "FROM" && in.Cmd != "ARG" && !b.started {
		return fmt.Errorf("%s before FROM: %w", in.Cmd, ErrInvalid)
	}
	switch in.Cmd {
	case "FROM":
		return b.from(in)
	case "ARG":
		for i := 0; i < len(in.Args); i += 2 {
			name, def := in.Args[i], in.Args[i+1]
			v, ok := b.opts.BuildArgs[name]
			if !ok {
				if !dockerfile.HasDefault(def) {
					def = b.globals[name]
				}
				var err error
				if v, err = b.expand(def, in.Escape); err != nil {
					return err
				}
			}
			b.args[name] = v
			b.argList = append(b.argList, name)
		}
		return nil
	case "RUN":
		return b.runStep(in)
	case "COPY", "ADD":
		return b.copyStep(in)
	}
	// Config-only instructions.
	args := in.Args
	if in.Cmd != "CMD" && in.Cmd != "ENTRYPOINT" {
		var err error
		if args, err = b.expandAll(in.Args, in.Escape); err != nil {
			return err
		}
	}
	var edit func(c *v1.Config)
	var layer func() (io.ReadCloser, error)
	switch in.Cmd {
	case "ENV":
		edit = func(c *v1.Config) {
			for i := 0; i < len(args); i += 2 {
				c.Env = mergeEnv(c.Env, []string{args[i] + "=" + args[i+1]})
			}
		}
	case "LABEL":
		edit = func(c *v1.Config) {
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			for i := 0; i < len(args); i += 2 {
				c.Labels[args[i]] = args[i+1]
			}
		}
	case "WORKDIR":
		w := args[0]
		if !path.IsAbs(w) {
			cur := ""
			if b.img != nil {
				cur = b.img.Config.WorkingDir
			}
			w = path.Join("/", cur, w)
		}
		w = path.Clean(w)
		edit = func(c *v1.Config) { c.WorkingDir = w }
		// As in Docker, a missing WORKDIR is created (a layer of its directories),
		// so RUN can start in it.
		layer = func() (io.ReadCloser, error) { return b.mkdirLayer(w) }
	case "MAINTAINER":
		key := b.cacheKey(in.Cmd, args, nil)
		return b.commit(key, nil, func(cf *v1.ConfigFile) { cf.Author = args[0] }, "/bin/sh -c #(nop) MAINTAINER "+args[0])
	case "USER":
		edit = func(c *v1.Config) { c.User = args[0] }
	case "STOPSIGNAL":
		edit = func(c *v1.Config) { c.StopSignal = args[0] }
	case "EXPOSE":
		for i, p := range args {
			if !strings.Contains(p, "/") {
				args[i] = p + "/tcp"
			}
			port, _, _ := strings.Cut(args[i], "/")
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("invalid port %q: %w", p, ErrInvalid)
			}
		}
		edit = func(c *v1.Config) {
			if c.ExposedPorts == nil {
				c.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range args {
				c.ExposedPorts[p] = struct{}{}
			}
		}
	case "VOLUME":
		edit = func(c *v1.Config) {
			if c.Volumes == nil {
				c.Volumes = map[string]struct{}{}
			}
			for _, v := range args {
				c.Volumes[v] = struct{}{}
			}
		}
	case "CMD", "ENTRYPOINT":
		cmd := args
		if !in.JSON {
			cmd = []string{"/bin/sh", "-c", args[0]}
		}
		if in.Cmd == "CMD" {
			edit = func(c *v1.Config) { c.Cmd = cmd }
		} else {
			edit = func(c *v1.Config) { c.Entrypoint = cmd; c.Cmd = nil }
		}
	default:
		return fmt.Errorf("unsupported instruction %s: %w", in.Cmd, ErrInvalid)
	}
	key := b.cacheKey(in.Cmd, args, nil)
	return b.commit(key, layer, func(cf *v1.ConfigFile) { edit(&cf.Config) }, "/bin/sh -c #(nop) "+in.Cmd+" "+strings.Join(args, " "))
}

func (b *builder) from(in dockerfile.Instruction) error {
	ref, err := dockerfile.Expand(in.Args[0], in.Escape, b.lookup(nil))
	if err != nil {
		return err
	}
	if !b.started {
		b.globals = b.args
	}
	b.started = true
	b.img, b.scratch = nil, false
	// ARGs declared before FROM are only usable in FROM lines (or redeclared after).
	b.args, b.argList = map[string]string{}, nil
	if ref == "scratch" {
		b.scratch = true
		return nil
	}
	if !b.opts.Pull {
		if r, err := b.s.getRec(ref); err == nil {
			b.img = r
			return nil
		}
	}
	b.say("Pulling %s\n", ref)
	im, err := b.s.Pull(b.ctx, ref, b.fromAuth(ref), b.opts.Progress)
	if err != nil {
		return err
	}
	b.img, err = b.s.getRec(im.ID)
	return err
}

// fromAuth picks the credentials for pulling ref: X-Registry-Config's entry for
// its registry, else opts.Auth (Pull falls back to the saved ones).
func (b *builder) fromAuth(ref string) *AuthConfig {
	if r, err := name.ParseReference(ref); err == nil {
		reg := registryKey(r.Context().RegistryStr())
		for k, a := range b.opts.Auths {
			if registryKey(k) == reg {
				return &a
			}
		}
	}
	return b.opts.Auth
}

func (b *builder) cacheKey(cmd string, args []string, extra []byte) string {
	h := sha256.New()
	parent := "scratch"
	if b.img != nil {
		parent = b.img.ID
	}
	j, _ := json.Marshal(args)
	fmt.Fprintf(h, "%s\n%s\n%s\n", parent, cmd, j)
	h.Write(extra)
	return hex.EncodeToString(h.Sum(nil))
}

// commit makes the next image (from the cache when allowed) and makes it current.
func (b *builder) commit(key string, layer func() (io.ReadCloser, error), edit func(*v1.ConfigFile), createdBy string) error {
	if !b.opts.NoCache {
		var id string
		b.s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bCache).Get([]byte(key)); v != nil && tx.Bucket(bImages).Get(v) != nil {
				id = string(v)
			}
			return nil
		})
		if id != "" {
			r, err := b.s.getRec(id)
			if err == nil {
				b.say(" ---> Using cache\n")
				b.img = r
				return nil
			}
		}
	}
	var lr io.Reader
	if layer != nil {
		rc, err := layer()
		if err != nil {
			return err
		}
		if rc != nil { // nil: nothing to add after all
			defer rc.Close()
			lr = rc
		}
	}
	if edit == nil {
		edit = func(*v1.ConfigFile) {}
	}
	im, err := b.s.newImage(b.ctx, b.img, lr, edit, v1.History{CreatedBy: createdBy})
	if err != nil {
		return err
	}
	// A nocache build does not displace a valid cache entry.
	err = b.s.db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bCache).Get([]byte(key)); v != nil && tx.Bucket(bImages).Get(v) != nil {
			return nil
		}
		return tx.Bucket(bCache).Put([]byte(key), []byte(im.ID))
	})
	if err != nil {
		return err
	}
	b.img, err = b.s.getRec(im.ID)
	return err
}

func (b *builder) runStep(in dockerfile.Instruction) error {
	if b.img == nil {
		return fmt.Errorf("RUN on a scratch image has nothing to run: %w", ErrInvalid)
	}
	if b.run == nil {
		return fmt.Errorf("RUN is not available (no sandbox runner): %w", ErrInvalid)
	}
	cmd := in.Args
	if !in.JSON {
		cmd = []string{"/bin/sh", "-c", in.Args[0]}
	}
	// Build args are visible to RUN as environment (ENV wins), as in Docker.
	env := append([]string(nil), b.img.Config.Env...)
	names := append([]string(nil), b.argList...)
	sort.Strings(names)
	for _, n := range names {
		if _, ok := b.lookup(b.img.Config.Env)(n); ok {
			found := false
			for _, e := range b.img.Config.Env {
				if strings.HasPrefix(e, n+"=") {
					found = true
				}
			}
			if !found {
				env = append(env, n+"="+b.args[n])
			}
		}
	}
	argEnv, _ := json.Marshal(env)
	key := b.cacheKey("RUN", cmd, argEnv)
	parent := b.img
	return b.commit(key, func() (io.ReadCloser, error) {
		return b.run(b.ctx, parent.ID, cmd, env, parent.Config.WorkingDir, parent.Config.User, b.out)
	}, nil, strings.Join(cmd, " "))
}
