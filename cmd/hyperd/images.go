package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/image"
	"github.com/hyperhq/hyperd-go/pod"
)

// openImages opens the image store under <data-root>/image and adapts it
// to the daemon core (pod.Images) and the API (api.ImageService).
func openImages(o Options, log *slog.Logger) (pod.Images, api.ImageService, error) {
	st, err := image.Open(filepath.Join(o.DataRoot, "image"))
	if err != nil {
		return nil, nil, err
	}
	st.InsecureRegistries = o.InsecureRegistry
	a := &imageAdapter{st: st, insecure: o.InsecureRegistry}
	return a, a, nil
}

type imageAdapter struct {
	st       *image.Store
	insecure []string
}

// mapErr turns the store's sentinel errors into the daemon's typed errors.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, image.ErrNotFound):
		return &pod.NotFoundError{Msg: err.Error()}
	case errors.Is(err, image.ErrConflict):
		return &pod.ConflictError{Msg: "conflict: " + err.Error()}
	case errors.Is(err, image.ErrInvalid):
		return &pod.SpecError{Msg: "bad parameter: " + err.Error()}
	}
	return err
}

func (a *imageAdapter) Resolve(ref string) (pod.ImageRef, error) {
	im, err := a.st.Get(ref)
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return pod.ImageRef{}, fmt.Errorf("%v: %w", err, pod.ErrImageNotFound)
		}
		return pod.ImageRef{}, mapErr(err)
	}
	return pod.ImageRef{ID: im.ID, RepoTags: im.RepoTags, Config: pod.ImageConfig(im.Config)}, nil
}

func (a *imageAdapter) RootfsDir(ctx context.Context, id string) (string, error) {
	d, err := a.st.RootfsDir(ctx, id)
	return d, mapErr(err)
}

func (a *imageAdapter) DiskImage(ctx context.Context, id string) (string, string, error) {
	p, f, err := a.st.DiskImage(ctx, id)
	return p, f, mapErr(err)
}

func (a *imageAdapter) Commit(ctx context.Context, parent string, layer io.Reader, opt pod.CommitOptions) (string, error) {
	co := image.CommitOptions{Repo: opt.Repo, Tag: opt.Tag, Comment: opt.Comment, Author: opt.Author}
	if opt.Config != nil {
		c := image.ImageConfig(*opt.Config)
		co.Config = &c
	}
	im, err := a.st.Commit(ctx, parent, layer, co)
	if err != nil {
		return "", mapErr(err)
	}
	return im.ID, nil
}

func (a *imageAdapter) List(all bool) ([]api.ImageSummary, error) {
	l, err := a.st.List(all)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]api.ImageSummary, 0, len(l))
	for _, im := range l {
		out = append(out, api.ImageSummary{ID: im.ID, RepoTags: im.RepoTags, Created: im.Created.Unix(), Size: im.Size})
	}
	return out, nil
}

func toAuth(a *api.AuthConfig) *image.AuthConfig {
	if a == nil {
		return nil
	}
	return &image.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth, Email: a.Email, ServerAddress: a.ServerAddress, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
}

func toProgress(fn func(api.Progress)) func(image.Progress) {
	if fn == nil {
		return nil
	}
	return func(p image.Progress) {
		fn(api.Progress{Status: p.Status, ID: p.ID, Progress: p.Progress, Current: p.Current, Total: p.Total, Error: p.Error})
	}
}

func (a *imageAdapter) Pull(ctx context.Context, ref string, auth *api.AuthConfig, progress func(api.Progress)) error {
	_, err := a.st.Pull(ctx, ref, toAuth(auth), toProgress(progress))
	return mapErr(err)
}

func (a *imageAdapter) Push(ctx context.Context, ref, remote string, auth *api.AuthConfig, progress func(api.Progress)) error {
	return mapErr(a.st.Push(ctx, ref, remote, toAuth(auth), toProgress(progress)))
}

func (a *imageAdapter) Remove(ref string, force, noprune bool, inUse func(string) bool) ([]api.RemoveItem, error) {
	items, err := a.st.Remove(ref, force, noprune, inUse)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]api.RemoveItem, 0, len(items))
	for _, it := range items {
		out = append(out, api.RemoveItem{Untagged: it.Untagged, Deleted: it.Deleted})
	}
	return out, nil
}

func (a *imageAdapter) Load(ctx context.Context, r io.Reader) ([]string, error) {
	n, err := a.st.Load(ctx, r)
	return n, mapErr(err)
}

func (a *imageAdapter) Save(ctx context.Context, w io.Writer, refs []string) error {
	return mapErr(a.st.Save(ctx, w, refs))
}

func (a *imageAdapter) CheckAuth(ctx context.Context, auth api.AuthConfig) (string, error) {
	s, err := image.CheckAuth(ctx, *toAuth(&auth), a.insecure)
	return s, mapErr(err)
}

func (a *imageAdapter) SaveAuth(auth api.AuthConfig) error {
	return mapErr(a.st.SaveAuth(*toAuth(&auth)))
}

func (a *imageAdapter) Build(ctx context.Context, buildContext io.Reader, opt api.BuildOptions, run pod.BuildRunFunc, out io.Writer, progress func(api.Progress)) (string, error) {
	bo := image.BuildOptions{Dockerfile: opt.Dockerfile, Tags: opt.Tags, BuildArgs: opt.BuildArgs, NoCache: opt.NoCache,
		Pull: opt.Pull, Quiet: opt.Quiet, Progress: toProgress(progress)}
	if len(opt.Auths) > 0 {
		bo.Auths = map[string]image.AuthConfig{}
		for k, v := range opt.Auths {
			bo.Auths[k] = *toAuth(&v)
		}
	}
	im, err := a.st.Build(ctx, buildContext, bo, image.RunFunc(run), out)
	if err != nil {
		return "", mapErr(err)
	}
	return im.ID, nil
}
