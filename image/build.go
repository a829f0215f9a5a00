package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
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

// mkdirLayer returns a layer creating dir and its missing parents (following
// symlinks inside the image as a container would), or nil when dir exists.
func (b *builder) mkdirLayer(dir string) (io.ReadCloser, error) {
	rel := path.Clean("/" + dir)[1:]
	if b.img != nil {
		r, err := b.imageRoot()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if rel, err = resolveIn(r, dir); err != nil {
			return nil, fmt.Errorf("WORKDIR %s: %v: %w", dir, err, ErrInvalid)
		}
		if fi, err := r.Stat(rel); err == nil {
			if !fi.IsDir() {
				return nil, fmt.Errorf("WORKDIR %s: not a directory in the image: %w", dir, ErrInvalid)
			}
			return nil, nil
		}
		// Keep the existing prefix out of the layer: only missing directories are added.
		var missing []string
		for p := rel; p != "." && p != ""; p = path.Dir(p) {
			if _, err := r.Lstat(p); err == nil {
				break
			}
			missing = append([]string{p}, missing...)
		}
		return dirTar(missing)
	}
	if rel == "" {
		return nil, nil
	}
	var all []string
	for p := rel; p != "."; p = path.Dir(p) {
		all = append([]string{p}, all...)
	}
	return dirTar(all)
}

func dirTar(dirs []string) (io.ReadCloser, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
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

// copyStep builds the COPY/ADD layer in a temp file, hashing file content and
// metadata (not times) for the cache key.
func (b *builder) copyStep(in dockerfile.Instruction) error {
	uid, gid := 0, 0
	for _, f := range in.Flags {
		switch {
		case strings.HasPrefix(f, "--chown="):
			u, g, _ := strings.Cut(strings.TrimPrefix(f, "--chown="), ":")
			if g == "" {
				g = u
			}
			var err1, err2 error
			uid, err1 = strconv.Atoi(u)
			gid, err2 = strconv.Atoi(g)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("--chown supports numeric uid:gid only, got %q: %w", f, ErrInvalid)
			}
		default:
			return fmt.Errorf("unsupported flag %s: %w", f, ErrInvalid)
		}
	}
	args, err := b.expandAll(in.Args, in.Escape)
	if err != nil {
		return err
	}
	srcs, dest := args[:len(args)-1], args[len(args)-1]
	workdir := "/"
	if b.img != nil && b.img.Config.WorkingDir != "" {
		workdir = b.img.Config.WorkingDir
	}
	destDir := strings.HasSuffix(dest, "/") || dest == "." || len(srcs) > 1
	if !path.IsAbs(dest) {
		dest = path.Join(workdir, dest)
	}
	dest = path.Clean(dest)
	if !destDir && b.img != nil {
		// "COPY file /etc" puts the file inside an existing directory, as Docker does.
		isDir, err := b.isDirInImage(dest)
		if err != nil {
			return err
		}
		destDir = isDir
	}
	f, err := os.CreateTemp(b.tmp, "layer-")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	h := sha256.New()
	add := func(hdr *tar.Header, body io.Reader) error {
		hdr.Name = strings.TrimPrefix(hdr.Name, "/")
		if err := checkNotWhiteout(strings.TrimSuffix(hdr.Name, "/")); err != nil {
			return err
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = uid, gid, "", ""
		fmt.Fprintf(h, "%s\x00%d\x00%o\x00%s\x00%d\x00", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Linkname, hdr.Size)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if body != nil {
			_, err := io.Copy(io.MultiWriter(tw, h), body)
			return err
		}
		return nil
	}
	n := 0
	for _, src := range srcs {
		if strings.Contains(src, "://") {
			return fmt.Errorf("%s from a URL is not supported (only local files): %w", in.Cmd, ErrInvalid)
		}
		pattern := path.Clean("/" + src)[1:]
		if pattern == "" {
			pattern = "."
		}
		var matches []string
		if strings.ContainsAny(pattern, `*?[\`) {
			if matches, err = fs.Glob(b.root.FS(), pattern); err != nil {
				return fmt.Errorf("bad pattern %q: %w", src, ErrInvalid)
			}
		} else if _, err := b.root.Lstat(pattern); err == nil {
			matches = []string{pattern} // Glob would follow a symlink (maybe out of the context)
		}
		if len(matches) == 0 {
			return fmt.Errorf("%s %s: no such file or directory in the build context: %w", in.Cmd, src, ErrNotFound)
		}
		for _, m := range matches {
			fi, err := b.root.Lstat(m)
			if err != nil {
				return err
			}
			n++
			switch {
			case fi.IsDir():
				err = fs.WalkDir(b.root.FS(), m, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					rel := strings.TrimPrefix(strings.TrimPrefix(p, m), "/")
					if m == "." {
						rel = p
						if p == "." {
							rel = ""
						}
					}
					if rel == "" {
						return add(&tar.Header{Name: dest + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
					}
					return b.addPath(add, p, path.Join(dest, rel))
				})
			case in.Cmd == "ADD" && b.isArchive(m):
				err = b.addArchive(add, m, dest)
			default:
				target := dest
				if destDir {
					target = path.Join(dest, path.Base(m))
				}
				err = b.addPath(add, m, target)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", in.Cmd, m, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	key := b.cacheKey(in.Cmd, args, h.Sum(nil))
	return b.commit(key, func() (io.ReadCloser, error) { return os.Open(f.Name()) }, nil, "/bin/sh -c #(nop) "+in.Cmd+" "+strings.Join(args, " "))
}

func (b *builder) addPath(add func(*tar.Header, io.Reader) error, src, dst string) error {
	fi, err := b.root.Lstat(src)
	if err != nil {
		return err
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = b.root.Readlink(src); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = dst
	// The context's own modes (setuid... included), not the plain host copy's;
	// directories the context tar only implied are 0755.
	if m, ok := b.modes[path.Clean(src)]; ok {
		hdr.Mode = m
	} else if fi.IsDir() {
		hdr.Mode = 0o755
	}
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if !fi.Mode().IsRegular() {
		return add(hdr, nil)
	}
	f, err := b.root.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return add(hdr, f)
}

// openArchive reads context file p as a (possibly compressed) tar.
func (b *builder) openArchive(p string) (_ *tar.Reader, closeAll func(), err error) {
	f, err := b.root.Open(p)
	if err != nil {
		return nil, nil, err
	}
	d, err := decompressContext(b.ctx, f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return tar.NewReader(d), func() { d.Close(); f.Close() }, nil
}

func (b *builder) isArchive(p string) bool {
	tr, closeAll, err := b.openArchive(p)
	if err != nil {
		return false
	}
	defer closeAll()
	_, err = tr.Next()
	return err == nil
}

// addArchive is ADD's auto-extraction of a local (possibly compressed) tar into dest.
func (b *builder) addArchive(add func(*tar.Header, io.Reader) error, p, dest string) error {
	tr, closeAll, err := b.openArchive(p)
	if err != nil {
		return err
	}
	defer closeAll()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Join(dest, path.Clean("/"+hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(dest, path.Clean("/"+hdr.Linkname))
		}
		hdr.Name = name
		if err := add(hdr, tr); err != nil {
			return err
		}
	}
}

// decompressContext accepts identity, gzip, zstd, bzip2 and xz (via the xz tool).
func decompressContext(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xz, err := exec.LookPath("xz")
		if err != nil {
			return nil, fmt.Errorf("xz-compressed context needs the xz tool (apt-get install -y xz-utils): %w", err)
		}
		cmd := exec.CommandContext(ctx, xz, "-dc")
		cmd.Stdin = br
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &cmdReader{out, cmd, &stderr}, nil
	}
	return decompress(br)
}

type cmdReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (c *cmdReader) Close() error {
	io.Copy(io.Discard, c.ReadCloser)
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("xz: %v: %s", err, strings.TrimSpace(c.stderr.String()))
	}
	return nil
}

// applyDockerignore removes what .dockerignore excludes from the extracted context
// so COPY/ADD cannot see it (the Dockerfile was read before).
func applyDockerignore(root *os.Root) error {
	b, err := root.ReadFile(".dockerignore")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ig, err := dockerfile.ParseIgnore(bytes.NewReader(b))
	if err != nil {
		return err
	}
	keepDirs := ig.HasExceptions()
	var remove []string
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if ig.Excluded(p) {
			if d.IsDir() && keepDirs {
				return nil // an exception may re-include something below
			}
			remove = append(remove, p)
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range remove {
		if err := root.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// imageRoot opens the current image's flattened root filesystem.
func (b *builder) imageRoot() (*os.Root, error) {
	rootfs, err := b.s.RootfsDir(b.ctx, b.img.ID)
	if err != nil {
		return nil, err
	}
	return os.OpenRoot(rootfs)
}

// isDirInImage reports whether p is a directory (following symlinks inside the
// image) in the current image's root filesystem.
func (b *builder) isDirInImage(p string) (bool, error) {
	r, err := b.imageRoot()
	if err != nil {
		return false, err
	}
	defer r.Close()
	rp, err := resolveIn(r, p)
	if err != nil {
		return false, nil
	}
	fi, err := r.Lstat(rp)
	return err == nil && fi.IsDir(), nil
}
