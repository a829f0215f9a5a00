package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors returned (wrapped) by the store; the daemon maps them to 404, 409 and 400.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("bad parameter")
)

// ImageConfig is the runtime part of an image's configuration.
type ImageConfig struct {
	Cmd          []string            `json:"Cmd,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Volumes      map[string]struct{} `json:"Volumes,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

// Image describes a stored image.
type Image struct {
	ID          string // "sha256:<hex>" of the config blob
	RepoTags    []string
	RepoDigests []string
	Created     time.Time
	Size        int64 // uncompressed size of all layers
	Config      ImageConfig
	Parent      string
}

// RemoveItem is one line of an image removal report.
type RemoveItem struct {
	Untagged string `json:"untaged,omitempty"`
	Deleted  string `json:"deleted,omitempty"`
}

type layerRec struct {
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"` // blob size
	DiffID    string `json:"diffID"`
	USize     int64  `json:"usize"` // uncompressed size
}

// imageRec is what the images bucket stores per image id.
type imageRec struct {
	ID        string      `json:"id"`
	Manifest  string      `json:"manifest"` // digest of the stored manifest blob
	MediaType string      `json:"mediaType"`
	Layers    []layerRec  `json:"layers"`
	Created   time.Time   `json:"created"`
	Size      int64       `json:"size"`
	Parent    string      `json:"parent,omitempty"`
	Config    ImageConfig `json:"config"`
}

var (
	bImages = []byte("images")
	bRefs   = []byte("refs")
	bLayers = []byte("layers")
	bCache  = []byte("buildcache")
	bAuth   = []byte("auth")
)

// Store is a content-addressed image store. It is safe for concurrent use.
type Store struct {
	root string
	db   *bolt.DB

	// InsecureRegistries lists registries (host[:port]) reached over plain HTTP in
	// addition to loopback ones.
	InsecureRegistries []string
	// Mirrors are asked first for the images of their registries (mirror.go).
	Mirrors []Mirror

	mu      sync.Mutex
	pending map[string]int         // blob digests pinned by leases of in-flight operations (GC skips them)
	builds  map[string]*sync.Mutex // per-key locks for rootfs/disk image building

	// testHook, when set (tests only), is called at the race windows: "stored"
	// (a blob was just renamed into blobs/) and "register" (an image record is
	// about to be registered), with the blob or image digest.
	testHook func(event, digest string)
}

func (s *Store) hookAt(event, digest string) {
	if s.testHook != nil {
		s.testHook(event, digest)
	}
}

// Open opens (creating if needed) the store rooted at root.
func Open(root string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "rootfs", "disk"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(root, "images.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("image store: open %s: %w", filepath.Join(root, "images.db"), err)
	}
	// The database lock is ours: anything left in tmp/ is from an interrupted
	// operation and was never visible.
	os.RemoveAll(filepath.Join(root, "tmp"))
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o700); err != nil {
		db.Close()
		return nil, fmt.Errorf("image store: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bImages, bRefs, bLayers, bCache, bAuth} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("image store: %w", err)
	}
	return &Store{root: root, db: db, pending: map[string]int{}, builds: map[string]*sync.Mutex{}}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) tmpDir() string { return filepath.Join(s.root, "tmp") }

func getRec(tx *bolt.Tx, id string) (*imageRec, error) {
	v := tx.Bucket(bImages).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	var r imageRec
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("image %s: corrupt record: %w", id, err)
	}
	return &r, nil
}

func putRec(tx *bolt.Tx, r *imageRec) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bImages).Put([]byte(r.ID), b)
}

// resolve finds the image id a reference designates: a name[:tag] or name@digest, a
// full id (with or without "sha256:"), or a unique id prefix of at least 4 hex digits.
func resolve(tx *bolt.Tx, ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return "", fmt.Errorf("empty image reference: %w", ErrInvalid)
	}
	imgs := tx.Bucket(bImages)
	hex := strings.TrimPrefix(ref, "sha256:")
	if isHex(hex) && len(hex) == 64 {
		if imgs.Get([]byte("sha256:"+hex)) != nil {
			return "sha256:" + hex, nil
		}
		if strings.HasPrefix(ref, "sha256:") {
			return "", fmt.Errorf("no such image: %s: %w", ref, ErrNotFound)
		}
	}
	if c, err := canonical(ref); err == nil {
		if v := tx.Bucket(bRefs).Get([]byte(c)); v != nil {
			return string(v), nil
		}
	}
	if isHex(hex) && len(hex) >= 4 {
		var found []string
		c := imgs.Cursor()
		pre := []byte("sha256:" + hex)
		for k, _ := c.Seek(pre); k != nil && strings.HasPrefix(string(k), string(pre)); k, _ = c.Next() {
			found = append(found, string(k))
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return "", fmt.Errorf("image id prefix %s is ambiguous (%d images): %w", hex, len(found), ErrInvalid)
		}
	}
	return "", fmt.Errorf("no such image: %s: %w", ref, ErrNotFound)
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// refsOf returns the canonical references pointing at id, sorted.
func refsOf(tx *bolt.Tx, id string) []string {
	var out []string
	tx.Bucket(bRefs).ForEach(func(k, v []byte) error {
		if string(v) == id {
			out = append(out, string(k))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func toImage(tx *bolt.Tx, r *imageRec) Image {
	im := Image{ID: r.ID, Created: r.Created, Size: r.Size, Config: r.Config, Parent: r.Parent}
	for _, ref := range refsOf(tx, r.ID) {
		if strings.Contains(ref, "@") {
			im.RepoDigests = append(im.RepoDigests, familiar(ref))
		} else {
			im.RepoTags = append(im.RepoTags, familiar(ref))
		}
	}
	return im
}

// Get returns the image a reference designates.
func (s *Store) Get(ref string) (Image, error) {
	var im Image
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		r, err := getRec(tx, id)
		if err != nil {
			return err
		}
		im = toImage(tx, r)
		return nil
	})
	return im, err
}

func (s *Store) getRec(ref string) (*imageRec, error) {
	var r *imageRec
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		r, err = getRec(tx, id)
		return err
	})
	return r, err
}

// List returns the images, newest first. Without all, untagged images that are the
// parent of another image (intermediate images) are left out, as in Docker.
func (s *Store) List(all bool) ([]Image, error) {
	var out []Image
	err := s.db.View(func(tx *bolt.Tx) error {
		parents := map[string]bool{}
		var recs []*imageRec
		err := tx.Bucket(bImages).ForEach(func(k, v []byte) error {
			var r imageRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("image %s: corrupt record: %w", k, err)
			}
			if r.Parent != "" {
				parents[r.Parent] = true
			}
			recs = append(recs, &r)
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			im := toImage(tx, r)
			if !all && len(im.RepoTags) == 0 && parents[r.ID] {
				continue
			}
			out = append(out, im)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

// Tag makes newRef (name[:tag]) point at the image ref designates.
func (s *Store) Tag(ref, newRef string) error {
	c, err := canonical(newRef)
	if err != nil {
		return err
	}
	if strings.Contains(c, "@") {
		return fmt.Errorf("cannot tag with a digest reference %q: %w", newRef, ErrInvalid)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		return tx.Bucket(bRefs).Put([]byte(c), []byte(id))
	})
}

// register stores an image record and points refs at it, in one transaction. Every
// blob the record names (config, manifest, layers) must be in blobs/ and pinned by
// the caller's lease, so GC cannot take it between this check and the commit: an
// incomplete image is never registered.
func (s *Store) register(r *imageRec, refs ...string) (existed bool, err error) {
	s.hookAt("register", r.ID)
	blobs := []string{r.ID, r.Manifest}
	for _, l := range r.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		if !s.hasBlob(d) {
			return false, fmt.Errorf("image %s: blob %s is missing (removed while the image was being made): %w", shortID(r.ID), d, ErrConflict)
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if old, _ := getRec(tx, r.ID); old != nil {
			existed = true
			if r.Parent == "" {
				r.Parent = old.Parent
			}
		}
		for _, l := range r.Layers {
			b, _ := json.Marshal(l)
			if err := tx.Bucket(bLayers).Put([]byte(l.Digest), b); err != nil {
				return err
			}
		}
		if err := putRec(tx, r); err != nil {
			return err
		}
		for _, ref := range refs {
			if err := tx.Bucket(bRefs).Put([]byte(ref), []byte(r.ID)); err != nil {
				return err
			}
		}
		return nil
	})
	return existed, err
}

func (s *Store) knownLayer(digest string) (layerRec, bool) {
	var l layerRec
	ok := false
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bLayers).Get([]byte(digest)); v != nil && json.Unmarshal(v, &l) == nil {
			_, err := os.Stat(s.blobPath(digest))
			ok = err == nil
		}
		return nil
	})
	return l, ok
}
