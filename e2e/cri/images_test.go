package cri

// This file builds the images critest pulls by their public names, from
// Debian's busybox-static (e2e/imgtest), and pushes them to a local
// docker-registry under <registry>/<repository>, which hyperd reaches for
// each of those registries through --registry-mirror REGISTRY=URL/REGISTRY.

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
)

// mirrored are the registries critest's images come from.
var mirrored = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io"}

// The users of critest's user images (cri-tools images/build) and the
// passwd/group files they need (busybox's base has root and nobody only).
const (
	passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n" +
		"www-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n"
	group = "root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
)

// pgrep is the one tool critest runs that Debian's busybox-static has no
// applet for ("pgrep sleep" after an ExecSync timeout): the pids of the
// processes whose command name contains the pattern, exit 1 for none.
const pgrep = `#!/bin/sh
st=1
for d in /proc/[0-9]*; do
	n=$(cat "$d/comm" 2>/dev/null) || continue
	case "$n" in *"$1"*) echo "${d#/proc/}"; st=0 ;; esac
done
exit $st
`

// testImage is one image critest uses: its public name, its config's User,
// what makes it differ from the others ("": its name), and its command
// (nil: the base's sh).
type testImage struct {
	ref, user, mark string
	cmd             []string
}

func critestImages() []testImage {
	const staging = "gcr.io/k8s-staging-cri-tools/"
	return []testImage{
		{ref: "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		{ref: "registry.k8s.io/pause:3.9", mark: "pause"},
		// critest's web servers: busybox's httpd, saying its name first
		// (the multi-container case looks for "httpd" in the log)
		{ref: "registry.k8s.io/e2e-test-images/httpd:2.4.39-4", mark: "httpd", cmd: []string{"sh", "-c", "echo httpd: busybox httpd on :80; exec httpd -f -v -p 80 -h /www"}},
		{ref: "registry.k8s.io/e2e-test-images/nginx:1.14-2", mark: "nginx", cmd: []string{"sh", "-c", "echo nginx: busybox httpd on :80; exec httpd -f -v -p 80 -h /www"}},
		{ref: "k8s.gcr.io/pause:3.9", mark: "pause"},
		{ref: staging + "test-image-latest:latest"},
		{ref: staging + "test-image-tag:test", mark: "tag-test"},
		{ref: staging + "test-image-tag:all", mark: "tag-all"},
		{ref: staging + "test-image-1:latest", mark: "1"},
		{ref: staging + "test-image-2:latest", mark: "2"},
		{ref: staging + "test-image-3:latest", mark: "3"},
		{ref: staging + "test-image-tags:1", mark: "tags"},
		{ref: staging + "test-image-tags:2", mark: "tags"},
		{ref: staging + "test-image-tags:3", mark: "tags"},
		{ref: staging + "test-image-user-uid:latest", user: "1002"},
		{ref: staging + "test-image-user-username:latest", user: "www-data"},
		{ref: staging + "test-image-user-uid-group:latest", user: "1003:1004"},
		{ref: staging + "test-image-user-username-group:latest", user: "www-data:1004"},
		{ref: staging + "test-image-predefined-group:latest", user: "1000"},
	}
}

// layer is a one-layer tar of files.
func layer(t testing.TB, files map[string]string) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for n, c := range files {
		mode := int64(0o644)
		if strings.HasPrefix(n, "bin/") {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(c))})
		tw.Write([]byte(c))
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pushImages pushes critest's images to the registry at addr (reached
// through rt; nil: the default transport).
func pushImages(t testing.TB, addr string, rt http.RoundTripper) {
	t.Helper()
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	var arch bytes.Buffer
	if err := imgtest.Write(&arch, bb, "base:latest"); err != nil {
		t.Fatal(err)
	}
	data := arch.Bytes()
	base, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	users := layer(t, map[string]string{"etc/passwd": passwd, "etc/group": group, "bin/pgrep": pgrep})
	for _, ti := range critestImages() {
		img, err := mutate.AppendLayers(base, users)
		if err != nil {
			t.Fatal(err)
		}
		// every image differs from the others (its own name in a file),
		// but those meant to be one image under several names
		mark := ti.mark
		if mark == "" {
			mark = ti.ref
		}
		{
			if img, err = mutate.AppendLayers(img, layer(t, map[string]string{"image-name": mark + "\n"})); err != nil {
				t.Fatal(err)
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cfg := cf.Config
		cfg.User = ti.user
		if ti.cmd != nil {
			cfg.Cmd = ti.cmd
		}
		if img, err = mutate.Config(img, cfg); err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(addr+"/"+public(t, ti.ref), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		var opts []remote.Option
		if rt != nil {
			opts = append(opts, remote.WithTransport(rt))
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
}

// public is ref with its registry spelled out (docker.io for Docker Hub).
func public(t testing.TB, ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.Context().RepositoryStr() + ":" + r.Identifier()
}
