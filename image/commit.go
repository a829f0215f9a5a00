package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
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
	var ref string
	if c.Repo != "" {
		tag := c.Tag
		if tag == "" {
			tag = "latest"
		}
		ref, err = canonical(c.Repo + ":" + tag)
		if err != nil {
			return Image{}, err
		}
	} else if c.Tag != "" {
		return Image{}, fmt.Errorf("commit: tag %q given without a repository: %w", c.Tag, ErrInvalid)
	}
	pcfg, err := s.readBlob(parent.ID)
	if err != nil {
		return Image{}, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(pcfg))
	if err != nil {
		return Image{}, fmt.Errorf("commit: parent config: %w", err)
	}
	// Compress the layer into a temp file while hashing both sides.
	pr, pw := io.Pipe()
	var diffID string
	var usize int64
	go func() {
		h := newHashWriter()
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		n, err := io.Copy(io.MultiWriter(zw, h), ctxReader{ctx, layer})
		if err == nil {
			err = zw.Close()
		}
		diffID, usize = h.digest(), n
		pw.CloseWithError(err)
	}()
	digest, _, err := s.putBlob(pr, "", "", nil)
	pr.Close()
	if err != nil {
		return Image{}, fmt.Errorf("commit: layer: %w", err)
	}
	release := s.hold(digest)
	defer func() { release() }()
	fi, err := os.Stat(s.blobPath(digest))
	if err != nil {
		return Image{}, err
	}
	now := time.Now().UTC()
	cf.Created = v1.Time{Time: now}
	cf.Author = c.Author
	cf.Container = ""
	if c.Config != nil {
		mergeConfig(&cf.Config, c.Config)
	}
	cf.RootFS.Type = "layers"
	cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, mustHash(diffID))
	cf.History = append(cf.History, v1.History{Created: v1.Time{Time: now}, Author: c.Author, Comment: c.Comment, CreatedBy: "hyperd commit"})
	cfgBytes, err := json.Marshal(cf)
	if err != nil {
		return Image{}, err
	}
	id, err := s.putBlobBytes(cfgBytes)
	if err != nil {
		return Image{}, err
	}
	release = chain(release, s.hold(id))
	rec := &imageRec{ID: id, MediaType: string(types.DockerManifestSchema2), Created: now, Parent: parent.ID, Config: configFrom(cf)}
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2,
		Config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfgBytes)), Digest: mustHash(id)}}
	for _, l := range parent.Layers {
		rec.Layers = append(rec.Layers, l)
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.MediaType(l.MediaType), Size: l.Size, Digest: mustHash(l.Digest)})
	}
	nl := layerRec{Digest: digest, MediaType: string(types.DockerLayer), Size: fi.Size(), DiffID: diffID, USize: usize}
	rec.Layers = append(rec.Layers, nl)
	man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.DockerLayer, Size: fi.Size(), Digest: mustHash(digest)})
	for _, l := range rec.Layers {
		rec.Size += l.USize
	}
	// A parent pulled as OCI keeps OCI media types for its layers; docker schema 2
	// accepts both, so the manifest stays docker schema 2.
	mb, _ := json.Marshal(man)
	if rec.Manifest, err = s.putBlobBytes(mb); err != nil {
		return Image{}, err
	}
	var refs []string
	if ref != "" {
		refs = append(refs, ref)
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

var _ = name.DefaultRegistry
