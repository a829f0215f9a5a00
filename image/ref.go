package image

import (
	"fmt"
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// canonical turns a reference into the form stored in the database:
// "docker.io/library/busybox:latest", "127.0.0.1:5000/x@sha256:...".
func canonical(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("invalid reference format %q: %v: %w", ref, err, ErrInvalid)
	}
	return canonicalOf(r), nil
}

func canonicalOf(r name.Reference) string {
	repo := repoName(r.Context())
	switch t := r.(type) {
	case name.Tag:
		return repo + ":" + t.TagStr()
	case name.Digest:
		return repo + "@" + t.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

func repoName(repo name.Repository) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr()
}

// familiar shortens a canonical reference as Docker displays it:
// docker.io/library/busybox:latest -> busybox:latest.
func familiar(c string) string {
	if s, ok := strings.CutPrefix(c, "docker.io/library/"); ok && !strings.Contains(strings.SplitN(s, "@", 2)[0], "/") {
		return s
	}
	if s, ok := strings.CutPrefix(c, "docker.io/"); ok {
		return s
	}
	return c
}

// isLoopback reports whether a registry host[:port] is on a loopback address.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Store) insecure(host string) bool { return insecureHost(host, s.InsecureRegistries) }

func insecureHost(host string, list []string) bool {
	if isLoopback(host) {
		return true
	}
	for _, h := range list {
		if h == host {
			return true
		}
	}
	return false
}

// remoteRef parses ref for talking to its registry: loopback and listed registries
// are plain HTTP, all others HTTPS only.
func remoteRef(ref string, insecure []string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid reference format %q: %v: %w", ref, err, ErrInvalid)
	}
	if insecureHost(r.Context().RegistryStr(), insecure) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}
