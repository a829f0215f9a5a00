// This file owns hyperd's CRI settings (--cri, --cri-socket,
// --cri-stream-address), serving the
// CRI (package cri) beside the REST API, and the adapter of the image
// store to the CRI's image service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hyperhq/hyperd-go/cri"
	"github.com/hyperhq/hyperd-go/image"
	"github.com/hyperhq/hyperd-go/pod"
)

// DefaultCRISocket is where the CRI is served unless --cri-socket says.
const DefaultCRISocket = "/var/run/hyperd/cri.sock"

// CRIOptions are the daemon's CRI settings.
type CRIOptions struct {
	CRI       *bool  `json:"cri,omitempty"` // nil: on
	CRISocket string `json:"cri-socket,omitempty"`
	// CRIStreamAddress is the streaming server's host:port (Exec, Attach,
	// PortForward); nil: 127.0.0.1:0, "" off.
	CRIStreamAddress *string `json:"cri-stream-address,omitempty"`
}

// DefaultCRIStreamAddress: loopback, a free port (containerd's default).
const DefaultCRIStreamAddress = "127.0.0.1:0"

func (o CRIOptions) streamAddress() string {
	if o.CRIStreamAddress == nil {
		return DefaultCRIStreamAddress
	}
	return *o.CRIStreamAddress
}

// criOn: the CRI is served.
func (o CRIOptions) criOn() bool { return o.CRI == nil || *o.CRI }

func (o CRIOptions) socket() string {
	if o.CRISocket == "" {
		return DefaultCRISocket
	}
	return o.CRISocket
}

// flags registers --cri and --cri-socket; apply copies them over the
// config file's after fs.Parse.
func (o *CRIOptions) flags(fs *flag.FlagSet) (apply func() error) {
	on := fs.Bool("cri", true, "serve the Kubernetes CRI (v1 RuntimeService and ImageService, gRPC) on --cri-socket")
	sock := fs.String("cri-socket", DefaultCRISocket, "the CRI's unix socket (mode 0660, root), for the kubelet or crictl: unix:///path or /path")
	stream := fs.String("cri-stream-address", DefaultCRIStreamAddress, "host:port of the CRI's streaming server (the URLs of Exec, Attach and PortForward; port 0 picks a free one; \"\" turns streaming off). It has no authentication of its own, as the kubelet's: keep it on loopback")
	return func() error {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "cri":
				o.CRI = on
			case "cri-socket":
				o.CRISocket = *sock
			case "cri-stream-address":
				o.CRIStreamAddress = stream
			}
		})
		o.CRISocket = strings.TrimPrefix(o.CRISocket, "unix://")
		if o.CRISocket != "" && !filepath.IsAbs(o.CRISocket) {
			return fmt.Errorf("--cri-socket %q: want an absolute path (unix:///path or /path)", o.CRISocket)
		}
		return nil
	}
}

// serveCRI starts the CRI server on its socket; the returned stop ends it
// (and its log followers). With --cri=false it does nothing.
func (o CRIOptions) serveCRI(d *pod.Daemon, imgs pod.Images, networking bool, vcpu, memory int, log *slog.Logger) (stop func(), err error) {
	if !o.criOn() {
		log.Info("the CRI is off (--cri=false)")
		return func() {}, nil
	}
	var ci cri.Images
	if a, ok := imgs.(*imageAdapter); ok {
		ci = &criImages{st: a.st, inUse: d.ImageInUse}
	}
	// both drivers give a running sandbox its containers' images (a pod VM
	// through disk hotplug: sandbox.DiskAdder), so the CRI is ready on both
	srv := cri.New(cri.Config{Core: d, Images: ci, Log: log, Version: version, Networking: networking,
		BaseVCPU: vcpu, BaseMemoryMiB: memory})
	path := o.socket()
	ln, err := listen("unix://" + path)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("CRI socket %s: %w", path, err)
	}
	stopStream := func() {}
	if a := o.streamAddress(); a != "" {
		if stopStream, err = srv.ServeStreaming(a); err != nil {
			ln.Close()
			srv.Close()
			return nil, err
		}
	}
	g := srv.GRPCServer()
	go func() {
		if err := g.Serve(ln); err != nil {
			log.Error("cri: serve", "err", err)
		}
	}()
	log.Info("hyperd serving the CRI", "socket", path)
	return func() {
		g.Stop()
		stopStream()
		srv.Close()
		os.Remove(path)
	}, nil
}

// criImages adapts the image store to the CRI's image service.
type criImages struct {
	st    *image.Store
	inUse func(id string) bool
}

func toCRIImage(im image.Image) cri.Image {
	return cri.Image{ID: im.ID, RepoTags: im.RepoTags, RepoDigests: im.RepoDigests, Size: uint64(max(im.Size, 0)), User: im.Config.User}
}

func criErr(err error) error {
	if errors.Is(err, image.ErrNotFound) {
		return fmt.Errorf("%v: %w", err, cri.ErrImageNotFound)
	}
	return mapErr(err)
}

func (c *criImages) List() ([]cri.Image, error) {
	l, err := c.st.List(false)
	if err != nil {
		return nil, criErr(err)
	}
	out := make([]cri.Image, 0, len(l))
	for _, im := range l {
		out = append(out, toCRIImage(im))
	}
	return out, nil
}

func (c *criImages) Status(ref string) (cri.Image, error) {
	im, err := c.st.Get(ref)
	if err != nil {
		return cri.Image{}, criErr(err)
	}
	return toCRIImage(im), nil
}

func (c *criImages) Pull(ctx context.Context, ref string, auth *cri.Auth) (cri.Image, error) {
	var a *image.AuthConfig
	if auth != nil {
		a = &image.AuthConfig{Username: auth.Username, Password: auth.Password, Auth: auth.Auth, ServerAddress: auth.ServerAddress,
			IdentityToken: auth.IdentityToken, RegistryToken: auth.RegistryToken}
	}
	im, err := c.st.Pull(ctx, ref, a, nil)
	if err != nil {
		return cri.Image{}, criErr(err)
	}
	return toCRIImage(im), nil
}

// Remove deletes the image ref names (all its names, for an id), unless a
// container uses it.
func (c *criImages) Remove(ref string) error {
	im, err := c.st.Get(ref)
	if err != nil {
		return criErr(err)
	}
	if c.inUse != nil && c.inUse(im.ID) {
		return &pod.ConflictError{Msg: fmt.Sprintf("conflict: image %s (%s) is used by a container", ref, im.ID)}
	}
	_, err = c.st.Remove(ref, true, false, nil)
	return criErr(err)
}

// FsUsage is the bytes and inodes under the store's root.
func (c *criImages) FsUsage() (cri.FsUsage, error) {
	u := cri.FsUsage{Mountpoint: c.st.Root()}
	err := filepath.WalkDir(c.st.Root(), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		u.Inodes++
		info, err := de.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.UsedBytes += uint64(st.Blocks) * 512
		}
		return nil
	})
	return u, err
}
