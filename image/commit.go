package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// CommitOptions names and describes a committed image. Config fields that are set
// replace the parent's (maps are merged key by key).
type CommitOptions struct {
	Repo, Tag, Comment, Author string
	Config                     *ImageConfig
}

// Commit creates a new image from parentID plus one layer (an uncompressed tar using
// OCI whiteouts), stored gzip-compressed, and tags it Repo:Tag when Repo is set.
func (s *Store) Commit(ctx context.Context, parentID string, layer io.Reader, c CommitOptions) (Image, error) {
	parent, err := s.getRec(parentID)
	if err != nil {
		return Image{}, err
	}
	var refs []string
	if c.Repo != "" {
		tag := c.Tag
		if tag == "" {
			tag = "latest"
		}
		ref, err := canonical(c.Repo + ":" + tag)
		if err != nil {
			return Image{}, err
		}
		refs = append(refs, ref)
	} else if c.Tag != "" {
		return Image{}, fmt.Errorf("commit: tag %q given without a repository: %w", c.Tag, ErrInvalid)
	}
	if layer == nil {
		return Image{}, fmt.Errorf("commit: no layer: %w", ErrInvalid)
	}
	return s.newImage(ctx, parent, layer, func(cf *v1.ConfigFile) {
		cf.Author = c.Author
		if c.Config != nil {
			mergeConfig(&cf.Config, c.Config)
		}
	}, v1.History{Author: c.Author, Comment: c.Comment, CreatedBy: "hyperd commit"}, refs...)
}

// newImage creates an image from parent (nil: scratch) plus, when layer is not nil,
// one layer (uncompressed tar, stored gzip-compressed), with its config changed by
// edit, and points refs at it.
func (s *Store) newImage(ctx context.Context, parent *imageRec, layer io.Reader, edit func(*v1.ConfigFile), hist v1.History, refs ...string) (Image, error) {
	cf := &v1.ConfigFile{Architecture: "amd64", OS: "linux"}
	if parent != nil {
		pcfg, err := s.readBlob(parent.ID)
		if err != nil {
			return Image{}, err
		}
		if cf, err = v1.ParseConfigFile(bytes.NewReader(pcfg)); err != nil {
			return Image{}, fmt.Errorf("parent config: %w", err)
		}
	}
	// The lease pins the parent's layers (a parent removed meanwhile keeps them
	// until the child is registered) and every blob written here.
	l := s.newLease()
	defer l.release()
	if parent != nil {
		for _, pl := range parent.Layers {
			l.pin(pl.Digest)
		}
	}
	var nl *layerRec
	if layer != nil {
		// Compress the layer into a temp file while hashing both sides.
		pr, pw := io.Pipe()
		var diffID string
		var usize int64
		go func() {
			h := newHashWriter()
			zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
			// a layer cut short (a guest that closed its commit stream
			// early) must not become an image: checkTar sees it whole
			cpr, cpw := io.Pipe()
			checked := make(chan error, 1)
			go func() {
				err := checkTar(cpr)
				io.Copy(io.Discard, cpr)
				checked <- err
			}()
			n, err := io.Copy(io.MultiWriter(zw, h, cpw), ctxReader{ctx, layer})
			cpw.CloseWithError(err)
			if cerr := <-checked; err == nil {
				err = cerr
			}
			if err == nil {
				err = zw.Close()
			}
			diffID, usize = h.digest(), n
			pw.CloseWithError(err)
		}()
		digest, size, _, err := s.putBlob(l, pr, "", "", nil)
		pr.Close()
		if err != nil {
			return Image{}, fmt.Errorf("layer: %w", err)
		}
		nl = &layerRec{Digest: digest, MediaType: string(types.DockerLayer), Size: size, DiffID: diffID, USize: usize}
	}
	now := time.Now().UTC()
	cf.Created = v1.Time{Time: now}
	cf.Container = ""
	edit(cf)
	cf.RootFS.Type = "layers"
	hist.Created = v1.Time{Time: now}
	if nl != nil {
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, mustHash(nl.DiffID))
	} else {
		hist.EmptyLayer = true
	}
	cf.History = append(cf.History, hist)
	cfgBytes, err := json.Marshal(cf)
	if err != nil {
		return Image{}, err
	}
	id, err := s.putBlobBytes(l, cfgBytes)
	if err != nil {
		return Image{}, err
	}
	rec := &imageRec{ID: id, MediaType: string(types.DockerManifestSchema2), Created: now, Config: configFrom(cf)}
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2,
		Config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfgBytes)), Digest: mustHash(id)}}
	if parent != nil {
		rec.Parent = parent.ID
		rec.Layers = append(rec.Layers, parent.Layers...)
	}
	if nl != nil {
		rec.Layers = append(rec.Layers, *nl)
	}
	// Layers pulled as OCI keep their media types; docker schema 2 accepts both.
	man.Layers = []v1.Descriptor{}
	for _, l := range rec.Layers {
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.MediaType(l.MediaType), Size: l.Size, Digest: mustHash(l.Digest)})
		rec.Size += l.USize
	}
	mb, _ := json.Marshal(man)
	if rec.Manifest, err = s.putBlobBytes(l, mb); err != nil {
		return Image{}, err
	}
	if _, err := s.register(rec, refs...); err != nil {
		return Image{}, err
	}
	return s.Get(id)
}

func mergeConfig(dst *v1.Config, c *ImageConfig) {
	if c.Cmd != nil {
		dst.Cmd = c.Cmd
	}
	if c.Entrypoint != nil {
		dst.Entrypoint = c.Entrypoint
	}
	if c.Env != nil {
		dst.Env = mergeEnv(dst.Env, c.Env)
	}
	if c.WorkingDir != "" {
		dst.WorkingDir = c.WorkingDir
	}
	if c.User != "" {
		dst.User = c.User
	}
	if c.StopSignal != "" {
		dst.StopSignal = c.StopSignal
	}
	for k := range c.ExposedPorts {
		if dst.ExposedPorts == nil {
			dst.ExposedPorts = map[string]struct{}{}
		}
		dst.ExposedPorts[k] = struct{}{}
	}
	for k := range c.Volumes {
		if dst.Volumes == nil {
			dst.Volumes = map[string]struct{}{}
		}
		dst.Volumes[k] = struct{}{}
	}
	for k, v := range c.Labels {
		if dst.Labels == nil {
			dst.Labels = map[string]string{}
		}
		dst.Labels[k] = v
	}
}

// mergeEnv overrides variables of base by name with those of over.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		k := kv
		if i := bytes.IndexByte([]byte(kv), '='); i >= 0 {
			k = kv[:i]
		}
		replaced := false
		for i, o := range out {
			if o == k || len(o) > len(k) && o[:len(k)+1] == k+"=" {
				out[i] = kv
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
