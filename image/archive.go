package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type dockerArchiveEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// extractPlain unpacks an archive's regular files and directories under dir (names
// are confined to dir).
func extractPlain(dir string, r io.Reader) (symlinks int, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return symlinks, nil
		}
		if err != nil {
			return symlinks, fmt.Errorf("reading archive: %v: %w", err, ErrInvalid)
		}
		name := path.Clean("/" + hdr.Name)[1:]
		if name == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return symlinks, err
			}
		case tar.TypeReg, tar.TypeRegA:
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return symlinks, err
				}
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return symlinks, err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return symlinks, fmt.Errorf("reading archive: %v: %w", err, ErrInvalid)
			}
		case tar.TypeSymlink:
			// docker save (< 25) links identical layers ("../<id>/layer.tar"); reads
			// through os.Root keep them inside the archive.
			if d := path.Dir(name); d != "." {
				root.MkdirAll(d, 0o700)
			}
			symlinks++
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return symlinks, err
			}
		}
	}
}

// Load imports a docker-archive (`docker save` format, manifest.json) or an
// OCI-archive (index.json) and returns the loaded references (or ids of untagged
// images).
func (s *Store) Load(ctx context.Context, r io.Reader) ([]string, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), "load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dr, err := decompress(r)
	if err != nil {
		return nil, fmt.Errorf("load: %v: %w", err, ErrInvalid)
	}
	links, err := extractPlain(dir, dr)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, err := root.Lstat("manifest.json"); err == nil {
		b, err := readRegular(root, "manifest.json")
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		var entries []dockerArchiveEntry
		if err := json.Unmarshal(b, &entries); err != nil {
			return nil, fmt.Errorf("load: manifest.json: %v: %w", err, ErrInvalid)
		}
		return s.loadDocker(ctx, root, entries)
	}
	if _, err := root.Lstat("index.json"); err == nil {
		// the OCI layout reader opens paths itself: an OCI archive has
		// no use for symlinks, so none may lead it out of the archive
		if links > 0 {
			return nil, fmt.Errorf("load: an OCI archive with symlinks (%d): %w", links, ErrInvalid)
		}
		return s.loadOCI(ctx, dir)
	}
	return nil, fmt.Errorf("load: archive has neither manifest.json (docker-archive) nor index.json (OCI): %w", ErrInvalid)
}

// loadDocker loads a docker-archive's entries from its extraction root.
func (s *Store) loadDocker(ctx context.Context, root *os.Root, entries []dockerArchiveEntry) ([]string, error) {
	var loaded []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return loaded, err
		}
		cfgBytes, err := readRegular(root, path.Clean(e.Config))
		if err != nil {
			return loaded, fmt.Errorf("load: config: %w", err)
		}
		cf, err := v1.ParseConfigFile(bytes.NewReader(cfgBytes))
		if err != nil {
			return loaded, fmt.Errorf("load: config %s: %v: %w", e.Config, err, ErrInvalid)
		}
		if len(cf.RootFS.DiffIDs) != len(e.Layers) {
			return loaded, fmt.Errorf("load: %d layers but %d diff ids in the config: %w", len(e.Layers), len(cf.RootFS.DiffIDs), ErrInvalid)
		}
		rec, refs, err := s.loadDockerEntry(root, e, cf, cfgBytes)
		if err != nil {
			return loaded, err
		}
		if len(refs) == 0 {
			loaded = append(loaded, rec.ID)
		}
		for _, c := range refs {
			loaded = append(loaded, familiar(c))
		}
	}
	return loaded, nil
}

// loadDockerEntry stores one docker-archive image's blobs and registers it; a
// lease pins every blob from before it is written until the image is registered.
func (s *Store) loadDockerEntry(root *os.Root, e dockerArchiveEntry, cf *v1.ConfigFile, cfgBytes []byte) (*imageRec, []string, error) {
	var refs []string
	for _, t := range e.RepoTags {
		c, err := canonical(t)
		if err != nil {
			return nil, nil, fmt.Errorf("load: tag %q: %w", t, err)
		}
		refs = append(refs, c)
	}
	l := s.newLease()
	defer l.release()
	cd, err := s.putBlobBytes(l, cfgBytes)
	if err != nil {
		return nil, nil, err
	}
	rec := &imageRec{ID: cd, MediaType: string(types.DockerManifestSchema2), Created: cf.Created.Time, Config: configFrom(cf)}
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2,
		Config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfgBytes)), Digest: mustHash(cd)}}
	for i, lp := range e.Layers {
		f, err := openRegular(root, path.Clean(lp))
		if err != nil {
			return nil, nil, fmt.Errorf("load: layer: %w", err)
		}
		mt, err := layerMediaType(f)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		diff := cf.RootFS.DiffIDs[i].String()
		d, size, usize, err := s.putBlob(l, f, "", diff, nil)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("load: layer %s: %w", lp, err)
		}
		rec.Layers = append(rec.Layers, layerRec{Digest: d, MediaType: string(mt), Size: size, DiffID: diff, USize: usize})
		rec.Size += usize
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: mt, Size: size, Digest: mustHash(d)})
	}
	mb, _ := json.Marshal(man)
	md, err := s.putBlobBytes(l, mb)
	if err != nil {
		return nil, nil, err
	}
	rec.Manifest = md
	if _, err := s.register(rec, refs...); err != nil {
		return nil, nil, err
	}
	return rec, refs, nil
}

// maxArchiveJSON bounds manifest.json and image configs read from an
// archive.
const maxArchiveJSON = 32 << 20

// openRegular opens name inside root (symlinks resolved, never out of it)
// and refuses anything but a regular file: no device, FIFO or directory.
func openRegular(root *os.Root, name string) (*os.File, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", name, err, ErrInvalid)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%v)", fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %v: %w", name, err, ErrInvalid)
	}
	return f, nil
}

// readRegular reads a regular file of at most maxArchiveJSON bytes.
func readRegular(root *os.Root, name string) ([]byte, error) {
	f, err := openRegular(root, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxArchiveJSON+1))
	if err == nil && len(b) > maxArchiveJSON {
		err = fmt.Errorf("larger than %d bytes", maxArchiveJSON)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", name, err, ErrInvalid)
	}
	return b, nil
}

func mustHash(d string) v1.Hash {
	h, err := v1.NewHash(d)
	if err != nil {
		panic(err)
	}
	return h
}

// layerMediaType sniffs a layer file's compression and rewinds it.
func layerMediaType(f *os.File) (types.MediaType, error) {
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return types.DockerLayer, nil
	case n == 4 && bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return types.OCILayerZStd, nil
	}
	return types.DockerUncompressedLayer, nil
}

func (s *Store) loadOCI(ctx context.Context, dir string) ([]string, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("load: OCI layout: %v: %w", err, ErrInvalid)
	}
	var loaded []string
	var walk func(ii v1.ImageIndex, inherited string) error
	walk = func(ii v1.ImageIndex, inherited string) error {
		im, err := ii.IndexManifest()
		if err != nil {
			return fmt.Errorf("load: %v: %w", err, ErrInvalid)
		}
		for _, d := range im.Manifests {
			refName := inherited
			if n := d.Annotations["io.containerd.image.name"]; n != "" {
				refName = n
			} else if n := d.Annotations["org.opencontainers.image.ref.name"]; n != "" && strings.ContainsAny(n, "/:") {
				refName = n
			}
			switch {
			case d.MediaType.IsIndex():
				child, err := ii.ImageIndex(d.Digest)
				if err != nil {
					return err
				}
				if err := walk(child, refName); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != "amd64") {
					continue
				}
				img, err := ii.Image(d.Digest)
				if err != nil {
					return fmt.Errorf("load: %v: %w", err, ErrInvalid)
				}
				var refs []string
				if refName != "" {
					c, err := canonical(refName)
					if err != nil {
						return fmt.Errorf("load: image name %q: %w", refName, err)
					}
					refs = append(refs, c)
				}
				l := s.newLease()
				rec, err := s.importImage(ctx, l, img, func(Progress) {})
				if err == nil {
					_, err = s.register(rec, refs...)
				}
				l.release()
				if err != nil {
					return err
				}
				if len(refs) == 0 {
					loaded = append(loaded, rec.ID)
				} else {
					loaded = append(loaded, familiar(refs[0]))
				}
			}
		}
		return nil
	}
	if err := walk(idx, ""); err != nil {
		return loaded, err
	}
	if len(loaded) == 0 {
		return nil, fmt.Errorf("load: no linux/amd64 image in the OCI archive: %w", ErrInvalid)
	}
	return loaded, nil
}

// Save writes the images refs designate as a docker-archive (`docker save` format:
// manifest.json, <config hex>.json, <diff id hex>/layer.tar uncompressed).
func (s *Store) Save(ctx context.Context, w io.Writer, refs []string) error {
	if len(refs) == 0 {
		return fmt.Errorf("save: no image given: %w", ErrInvalid)
	}
	type item struct {
		rec  *imageRec
		tags []string
	}
	var items []*item
	byID := map[string]*item{}
	for _, ref := range refs {
		rec, err := s.getRec(ref)
		if err != nil {
			return err
		}
		it := byID[rec.ID]
		if it == nil {
			it = &item{rec: rec}
			byID[rec.ID] = it
			items = append(items, it)
		}
		if c, err := canonical(ref); err == nil && !strings.Contains(c, "@") {
			if im, _ := s.Get(c); im.ID == rec.ID {
				it.tags = append(it.tags, familiar(c))
				continue
			}
		}
		im, err := s.Get(rec.ID)
		if err != nil {
			return err
		}
		it.tags = append(it.tags, im.RepoTags...)
	}
	tw := tar.NewWriter(w)
	var manifest []dockerArchiveEntry
	written := map[string]bool{}
	for _, it := range items {
		cfg, err := s.readBlob(it.rec.ID)
		if err != nil {
			return err
		}
		cfgName := hexOf(it.rec.ID) + ".json"
		if err := writeTarFile(tw, cfgName, cfg); err != nil {
			return err
		}
		sort.Strings(it.tags)
		e := dockerArchiveEntry{Config: cfgName, RepoTags: dedupe(it.tags)}
		for _, l := range it.rec.Layers {
			lp := hexOf(l.DiffID) + "/layer.tar"
			e.Layers = append(e.Layers, lp)
			if written[lp] {
				continue
			}
			written[lp] = true
			if err := tw.WriteHeader(&tar.Header{Name: hexOf(l.DiffID) + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				return err
			}
			rc, err := s.openLayer(l.Digest)
			if err != nil {
				return err
			}
			err = tw.WriteHeader(&tar.Header{Name: lp, Typeflag: tar.TypeReg, Mode: 0o644, Size: l.USize})
			if err == nil {
				_, err = io.Copy(tw, ctxReader{ctx, rc})
			}
			rc.Close()
			if err != nil {
				return fmt.Errorf("save: layer %s: %w", l.Digest, err)
			}
		}
		manifest = append(manifest, e)
	}
	mb, _ := json.Marshal(manifest)
	if err := writeTarFile(tw, "manifest.json", mb); err != nil {
		return err
	}
	return tw.Close()
}

func dedupe(in []string) []string {
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func writeTarFile(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

var _ = errors.New
