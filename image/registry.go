package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"
)

// AuthConfig carries registry credentials, as Docker's AuthConfig (X-Registry-Auth).
type AuthConfig struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	Email         string `json:"email,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// Progress is one Docker-style JSON progress message.
type Progress struct {
	Status   string
	ID       string
	Progress string
	Current  int64
	Total    int64
	Error    string
}

func (a *AuthConfig) authenticator() authn.Authenticator {
	if a == nil || (a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == "") {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
}

// pullJobs is the number of concurrent layer downloads (Docker's default is 3).
const pullJobs = 3

func remoteOpts(ctx context.Context, auth *AuthConfig) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth.authenticator()),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
		remote.WithJobs(pullJobs), remote.WithUserAgent("hyperd-go")}
}

func shortID(d string) string {
	h := hexOf(d)
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Pull fetches ref from its registry into the store. Manifest lists are resolved to
// linux/amd64. Layers are downloaded concurrently and each becomes visible only once
// its digest and diff id are verified.
func (s *Store) Pull(ctx context.Context, ref string, auth *AuthConfig, progress func(Progress)) (Image, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	var pmu sync.Mutex
	emit := func(p Progress) { pmu.Lock(); progress(p); pmu.Unlock() }
	r, err := remoteRef(ref, s.InsecureRegistries)
	if err != nil {
		return Image{}, err
	}
	opts := remoteOpts(ctx, s.authFor(r.Context().RegistryStr(), auth))
	emit(Progress{Status: "Pulling from " + familiar(repoName(r.Context())), ID: r.Identifier()})
	desc, err := s.getDescriptor(ctx, r, opts)
	if err != nil {
		return Image{}, registryErr("pull", r, err)
	}
	img, err := desc.Image()
	if err != nil {
		return Image{}, registryErr("pull", r, err)
	}
	l := s.newLease()
	defer l.release()
	rec, err := s.importImage(ctx, l, img, emit)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	refs := []string{repoName(r.Context()) + "@" + desc.Digest.String()}
	if _, ok := r.(name.Tag); ok {
		refs = append(refs, canonicalOf(r))
	}
	prevID := ""
	if old, err := s.getRec(canonicalOf(r)); err == nil {
		prevID = old.ID
	}
	if _, err := s.register(rec, refs...); err != nil {
		return Image{}, err
	}
	emit(Progress{Status: "Digest: " + desc.Digest.String()})
	if prevID == rec.ID {
		emit(Progress{Status: "Status: Image is up to date for " + familiar(canonicalOf(r))})
	} else {
		emit(Progress{Status: "Status: Downloaded newer image for " + familiar(canonicalOf(r))})
	}
	return s.Get(rec.ID)
}

// registryErr wraps registry failures: unknown manifests are ErrNotFound, bad
// credentials are reported as such.
func registryErr(op string, r name.Reference, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s %s: %v: %w", op, r, err, ErrNotFound)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s %s: authentication required or credentials rejected by %s: %v", op, r, r.Context().RegistryStr(), err)
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%s %s: %v: %w", op, r, err, ErrNotFound)
			}
		}
	}
	return fmt.Errorf("%s %s: %w", op, r, err)
}

// importImage copies an image's blobs into the store (verified, atomically) and
// returns its record, not yet registered. The caller registers it; until then l
// pins the blobs against GC (all of them before any is looked for or written).
func (s *Store) importImage(ctx context.Context, l *lease, img v1.Image, emit func(Progress)) (*imageRec, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("parsing image config: %v: %w", err, ErrInvalid)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("manifest has %d layers, config %d diff ids: %w", len(m.Layers), len(cf.RootFS.DiffIDs), ErrInvalid)
	}
	digests := []string{m.Config.Digest.String()}
	for _, ml := range m.Layers {
		digests = append(digests, ml.Digest.String())
	}
	l.pin(digests...)
	rec := &imageRec{ID: m.Config.Digest.String(), MediaType: string(mt), Created: cf.Created.Time,
		Config: configFrom(cf)}
	rec.Layers = make([]layerRec, len(m.Layers))
	for i, l := range m.Layers {
		rec.Layers[i] = layerRec{Digest: l.Digest.String(), MediaType: string(l.MediaType), Size: l.Size,
			DiffID: cf.RootFS.DiffIDs[i].String()}
		emit(Progress{Status: "Pulling fs layer", ID: shortID(l.Digest.String())})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pullJobs)
	for i := range rec.Layers {
		lr := &rec.Layers[i]
		if known, ok := s.knownLayer(lr.Digest); ok && known.DiffID == lr.DiffID {
			lr.USize = known.USize
			emit(Progress{Status: "Already exists", ID: shortID(lr.Digest)})
			continue
		}
		g.Go(func() error {
			id := shortID(lr.Digest)
			h, err := v1.NewHash(lr.Digest)
			if err != nil {
				return err
			}
			layer, err := img.LayerByDigest(h)
			if err != nil {
				return err
			}
			rc, err := layer.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			var last time.Time
			count := func(n int64) {
				if now := time.Now(); now.Sub(last) > 100*time.Millisecond || n == lr.Size {
					last = now
					emit(Progress{Status: "Downloading", ID: id, Current: n, Total: lr.Size, Progress: bar(n, lr.Size)})
				}
			}
			_, _, usize, err := s.putBlob(l, ctxReader{gctx, rc}, lr.Digest, lr.DiffID, count)
			if err != nil {
				return fmt.Errorf("layer %s: %w", lr.Digest, err)
			}
			lr.USize = usize
			emit(Progress{Status: "Verifying Checksum", ID: id})
			emit(Progress{Status: "Download complete", ID: id})
			emit(Progress{Status: "Pull complete", ID: id})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if _, _, _, err := s.putBlob(l, bytes.NewReader(rawCfg), rec.ID, "", nil); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	md, err := s.putBlobBytes(l, rawManifest)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	rec.Manifest = md
	for _, lr := range rec.Layers {
		rec.Size += lr.USize
	}
	return rec, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func configFrom(cf *v1.ConfigFile) ImageConfig {
	c := cf.Config
	return ImageConfig{Cmd: c.Cmd, Entrypoint: c.Entrypoint, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
		ExposedPorts: c.ExposedPorts, Volumes: c.Volumes, Labels: c.Labels, StopSignal: c.StopSignal}
}

// bar renders Docker's progress bar: "[=====>      ]  1.2MB/3.4MB".
func bar(cur, total int64) string {
	if total <= 0 {
		return humanSize(cur)
	}
	const width = 50
	n := int(float64(width) * float64(cur) / float64(total))
	if n > width {
		n = width
	}
	b := strings.Repeat("=", n)
	if n < width {
		b += ">" + strings.Repeat(" ", width-n-1)
	}
	return fmt.Sprintf("[%s] %8s/%s", b, humanSize(cur), humanSize(total))
}

func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.4g%s", f, units[i])
}

// storedImage exposes a stored image as a go-containerregistry image for pushing.
type storedImage struct {
	s        *Store
	rec      *imageRec
	manifest []byte
	config   []byte
}

func (i *storedImage) RawConfigFile() ([]byte, error) { return i.config, nil }
func (i *storedImage) MediaType() (types.MediaType, error) {
	return types.MediaType(i.rec.MediaType), nil
}
func (i *storedImage) RawManifest() ([]byte, error) { return i.manifest, nil }
func (i *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range i.rec.Layers {
		if l.Digest == h.String() {
			return &storedLayer{i.s, l}, nil
		}
	}
	if h.String() == i.rec.ID {
		return partial.ConfigLayer(i)
	}
	return nil, fmt.Errorf("layer %s not in image %s: %w", h, i.rec.ID, ErrNotFound)
}

type storedLayer struct {
	s *Store
	l layerRec
}

func (l *storedLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.l.Digest) }
func (l *storedLayer) Compressed() (io.ReadCloser, error) {
	return openFile(l.s.blobPath(l.l.Digest))
}
func (l *storedLayer) Size() (int64, error) { return l.l.Size, nil }
func (l *storedLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.l.MediaType), nil
}

func (s *Store) v1Image(rec *imageRec) (v1.Image, error) {
	man, err := s.readBlob(rec.Manifest)
	if err != nil {
		return nil, err
	}
	cfg, err := s.readBlob(rec.ID)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&storedImage{s: s, rec: rec, manifest: man, config: cfg})
}

// Push uploads the image ref designates to the registry as remoteRef (ref itself when
// remoteRef is empty).
func (s *Store) Push(ctx context.Context, ref, remoteName string, auth *AuthConfig, progress func(Progress)) error {
	if progress == nil {
		progress = func(Progress) {}
	}
	rec, err := s.getRec(ref)
	if err != nil {
		return err
	}
	if remoteName == "" {
		remoteName = ref
	}
	dst, err := remoteRef(remoteName, s.InsecureRegistries)
	if err != nil {
		return err
	}
	img, err := s.v1Image(rec)
	if err != nil {
		return err
	}
	progress(Progress{Status: "The push refers to repository [" + repoName(dst.Context()) + "]"})
	var total int64
	for i := len(rec.Layers) - 1; i >= 0; i-- {
		progress(Progress{Status: "Preparing", ID: shortID(rec.Layers[i].Digest)})
		total += rec.Layers[i].Size
	}
	updates := make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last time.Time
		for u := range updates {
			if now := time.Now(); now.Sub(last) > 100*time.Millisecond || u.Complete == u.Total {
				last = now
				progress(Progress{Status: "Pushing", ID: repoName(dst.Context()), Current: u.Complete, Total: u.Total, Progress: bar(u.Complete, u.Total)})
			}
		}
	}()
	opts := append(remoteOpts(ctx, s.authFor(dst.Context().RegistryStr(), auth)), remote.WithProgress(updates))
	err = remote.Write(dst, img, opts...)
	<-done
	if err != nil {
		return registryErr("push", dst, err)
	}
	for i := len(rec.Layers) - 1; i >= 0; i-- {
		progress(Progress{Status: "Pushed", ID: shortID(rec.Layers[i].Digest)})
	}
	man, _ := s.readBlob(rec.Manifest)
	progress(Progress{Status: fmt.Sprintf("%s: digest: %s size: %d", dst.Identifier(), rec.Manifest, len(man))})
	// Record the pushed digest reference, unless the image was removed during
	// the push: re-registering it would bring back an image whose blobs GC took.
	digestRef := repoName(dst.Context()) + "@" + rec.Manifest
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bImages).Get([]byte(rec.ID)) == nil {
			return fmt.Errorf("push: image %s was removed during the push: %w", shortID(rec.ID), ErrConflict)
		}
		return tx.Bucket(bRefs).Put([]byte(digestRef), []byte(rec.ID))
	})
}

func (a *AuthConfig) empty() bool {
	return a == nil || (a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == "")
}

// registryKey normalises a registry address: "https://index.docker.io/v1/",
// "docker.io" and "" are Docker Hub; scheme and /v1, /v2 suffixes are dropped.
func registryKey(server string) string {
	server = strings.TrimSpace(server)
	server = strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	server = strings.TrimSuffix(strings.TrimSuffix(server, "/"), "/v1")
	server = strings.TrimSuffix(strings.TrimSuffix(server, "/"), "/v2")
	server = strings.TrimSuffix(server, "/")
	if server == "" || server == "index.docker.io" || server == "docker.io" || server == "registry-1.docker.io" {
		return name.DefaultRegistry
	}
	return server
}

// SaveAuth remembers credentials for a.ServerAddress (POST /auth after CheckAuth
// succeeded); Pull and Push use them when called without credentials.
func (s *Store) SaveAuth(a AuthConfig) error {
	key := registryKey(a.ServerAddress)
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bAuth).Put([]byte(key), b) })
}

// authFor returns a when it carries credentials, else those saved for registry.
func (s *Store) authFor(registry string, a *AuthConfig) *AuthConfig {
	if !a.empty() {
		return a
	}
	var saved *AuthConfig
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bAuth).Get([]byte(registryKey(registry))); v != nil {
			var c AuthConfig
			if json.Unmarshal(v, &c) == nil {
				saved = &c
			}
		}
		return nil
	})
	return saved
}

// CheckAuth verifies credentials against a registry's /v2/ endpoint (POST /auth). The
// registry is a.ServerAddress (Docker Hub when empty).
func CheckAuth(ctx context.Context, a AuthConfig, insecure []string) (string, error) {
	server := registryKey(a.ServerAddress)
	var nopts []name.Option
	if insecureHost(server, insecure) {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(server, nopts...)
	if err != nil {
		return "", fmt.Errorf("invalid registry address %q: %v: %w", a.ServerAddress, err, ErrInvalid)
	}
	rt, err := transport.NewWithContext(ctx, reg, a.authenticator(), http.DefaultTransport, nil)
	if err != nil {
		// Token registries check the credentials while fetching the token.
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return "", fmt.Errorf("login to %s: unauthorized: incorrect username or password: %v", server, err)
		}
		return "", fmt.Errorf("login to %s: %w", server, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return "", fmt.Errorf("login to %s: %w", server, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return "Login Succeeded", nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("login to %s: unauthorized: incorrect username or password", server)
	}
	return "", fmt.Errorf("login to %s: registry answered %s", server, resp.Status)
}
