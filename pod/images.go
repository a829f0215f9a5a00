// This file owns the daemon's view of images: the narrow Images interface,
// resolving a container's image, and whether an image is in use.

package pod

import (
	"context"
	"errors"
	"io"
	"strings"
)

// ImageConfig is the part of an image's config the daemon uses. Its fields
// mirror image.ImageConfig so the image store's type converts directly.
type ImageConfig struct {
	Cmd          []string
	Entrypoint   []string
	Env          []string
	WorkingDir   string
	User         string
	ExposedPorts map[string]struct{}
	Volumes      map[string]struct{}
	Labels       map[string]string
	StopSignal   string
}

// ImageRef is a resolved image.
type ImageRef struct {
	ID       string
	RepoTags []string
	Config   ImageConfig
}

// CommitOptions name the image a commit creates.
type CommitOptions struct {
	Repo, Tag, Comment, Author string
	Config                     *ImageConfig
}

// ErrImageNotFound is returned (wrapped) by Images.Resolve for unknown refs.
var ErrImageNotFound = errors.New("image not found")

// Images is the narrow view of the image store the daemon core needs.
type Images interface {
	// Resolve finds a local image by reference or id.
	Resolve(ref string) (ImageRef, error)
	// RootfsDir is the flattened rootfs directory of an image (local driver).
	RootfsDir(ctx context.Context, id string) (string, error)
	// DiskImage is a read-only disk image of the rootfs (kvm driver).
	DiskImage(ctx context.Context, id string) (path, fstype string, err error)
	// Commit creates an image from parent + a layer tar; returns the new id.
	Commit(ctx context.Context, parentID string, layer io.Reader, opt CommitOptions) (string, error)
}

func (d *Daemon) resolveImage(ref string) (ImageRef, error) {
	if d.img == nil {
		return ImageRef{}, errNoImageStore()
	}
	im, err := d.img.Resolve(ref)
	if err != nil {
		if errors.Is(err, ErrImageNotFound) {
			return ImageRef{}, notFound("image %s not found locally (pull or load it first)", ref)
		}
		return ImageRef{}, err
	}
	return im, nil
}

// ImageInUse reports whether any container record uses the image id.
func (d *Daemon) ImageInUse(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.ctrs {
		if c.rec.ImageID == id || strings.TrimPrefix(c.rec.ImageID, "sha256:") == strings.TrimPrefix(id, "sha256:") {
			return true
		}
	}
	return false
}

// errNoImageStore: this daemon has no image store (Config.Images is nil).
func errNoImageStore() error {
	return &NotImplementedError{Msg: "no image store is available in this daemon"}
}

// imageRootfs is the container's image as the driver attaches it: a
// read-only disk image and its fstype (kvm), or a rootfs directory (local).
func (d *Daemon) imageRootfs(ctx context.Context, c *ctrState) ([2]string, error) {
	if d.img == nil {
		return [2]string{}, errNoImageStore()
	}
	if d.drv.Name() == "kvm" {
		path, fstype, err := d.img.DiskImage(ctx, c.rec.ImageID)
		return [2]string{path, fstype}, err
	}
	path, err := d.img.RootfsDir(ctx, c.rec.ImageID)
	return [2]string{path, ""}, err
}
