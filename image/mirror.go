// This file owns registry mirrors (hyperd --registry-mirror, Docker's
// registry-mirrors and containerd's hosts mirrors): a pull of an image of
// a mirrored registry asks each of its mirrors first, in order, and the
// registry itself last. The image is stored under its own name, whichever
// endpoint served it.

package image

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Mirror is one mirror of a registry.
type Mirror struct {
	// Registry is the mirrored registry's host[:port]; docker.io stands
	// for Docker Hub (index.docker.io, registry-1.docker.io).
	Registry string
	// Host is the mirror's host[:port], Prefix a repository path prefix
	// on it ("" or "a/b"), Insecure: plain HTTP.
	Host     string
	Prefix   string
	Insecure bool
}

// ParseMirror parses "[REGISTRY=]URL": URL is http[s]://host[:port][/path]
// and REGISTRY defaults to docker.io (what Docker's registry-mirrors
// mirror). With a path, the mirror serves the registry's repository R as
// path/R (one mirror registry can serve several registries that way).
func ParseMirror(s string) (Mirror, error) {
	reg, u, ok := strings.Cut(s, "=")
	if !ok {
		reg, u = "docker.io", s
	}
	reg = strings.TrimSpace(reg)
	if reg == "" || strings.ContainsAny(reg, "/ ") {
		return Mirror{}, fmt.Errorf("registry mirror %q: the registry must be a host[:port]", s)
	}
	pu, err := url.Parse(strings.TrimSpace(u))
	if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
		return Mirror{}, fmt.Errorf("registry mirror %q: want [REGISTRY=]http[s]://host[:port][/path]", s)
	}
	if pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil {
		return Mirror{}, fmt.Errorf("registry mirror %q: no query, fragment or user info", s)
	}
	return Mirror{Registry: hubAlias(reg), Host: pu.Host, Prefix: strings.Trim(pu.Path, "/"), Insecure: pu.Scheme == "http"}, nil
}

func hubAlias(reg string) string {
	switch reg {
	case name.DefaultRegistry, "registry-1.docker.io":
		return "docker.io"
	}
	return reg
}

// String is the mirror as ParseMirror reads it.
func (m Mirror) String() string {
	scheme := "https"
	if m.Insecure {
		scheme = "http"
	}
	s := m.Registry + "=" + scheme + "://" + m.Host
	if m.Prefix != "" {
		s += "/" + m.Prefix
	}
	return s
}

// ref is r on the mirror.
func (m Mirror) ref(r name.Reference) (name.Reference, error) {
	repo := m.Host + "/"
	if m.Prefix != "" {
		repo += m.Prefix + "/"
	}
	repo += r.Context().RepositoryStr()
	var opts []name.Option
	if m.Insecure {
		opts = append(opts, name.Insecure)
	}
	switch t := r.(type) {
	case name.Digest:
		return name.NewDigest(repo+"@"+t.DigestStr(), opts...)
	default:
		return name.NewTag(repo+":"+r.Identifier(), opts...)
	}
}

// getDescriptor fetches r's manifest from r's mirrors, in order, then from
// its registry (opts: the registry's options). The descriptor carries the
// endpoint it came from, so the layers come from there too. Credentials of
// the registry are not sent to a mirror (its own stored ones are).
func (s *Store) getDescriptor(ctx context.Context, r name.Reference, opts []remote.Option) (*remote.Descriptor, error) {
	reg := hubAlias(r.Context().RegistryStr())
	var errs []error
	for _, m := range s.Mirrors {
		if m.Registry != reg {
			continue
		}
		mr, err := m.ref(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("mirror %s: %w", m.Host, err))
			continue
		}
		desc, err := remote.Get(mr, remoteOpts(ctx, s.authFor(m.Host, nil))...)
		if err == nil {
			return desc, nil
		}
		errs = append(errs, fmt.Errorf("mirror %s: %w", m.Host, err))
	}
	desc, err := remote.Get(r, opts...)
	if err != nil && len(errs) > 0 {
		return nil, fmt.Errorf("%w (after the mirrors failed: %v)", err, errors.Join(errs...))
	}
	return desc, err
}
