package image

// Tests of registry mirror parsing and the mirror's reference of an image.

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestParseMirror(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"http://127.0.0.1:5000", "docker.io=http://127.0.0.1:5000", true},
		{"docker.io=https://mirror.example:443/", "docker.io=https://mirror.example:443", true},
		{"index.docker.io=http://127.0.0.1:5000", "docker.io=http://127.0.0.1:5000", true},
		{"gcr.io=http://127.0.0.1:5000/gcr.io", "gcr.io=http://127.0.0.1:5000/gcr.io", true},
		{"127.0.0.1:5000", "", false},
		{"ftp://h", "", false},
		{"=http://h", "", false},
		{"a/b=http://h", "", false},
		{"http://u:p@h", "", false},
	} {
		m, err := ParseMirror(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseMirror(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && m.String() != tc.want {
			t.Errorf("ParseMirror(%q) = %s, want %s", tc.in, m, tc.want)
		}
	}
}

func TestMirrorRef(t *testing.T) {
	for _, tc := range []struct{ mirror, ref, want string }{
		{"http://127.0.0.1:5000", "busybox", "127.0.0.1:5000/library/busybox:latest"},
		{"http://127.0.0.1:5000/hub", "docker.io/x/y:1", "127.0.0.1:5000/hub/x/y:1"},
		{"registry.k8s.io=http://127.0.0.1:5000/registry.k8s.io", "registry.k8s.io/e2e-test-images/busybox:1.29-2",
			"127.0.0.1:5000/registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		{"http://127.0.0.1:5000", "busybox@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
			"127.0.0.1:5000/library/busybox@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"},
	} {
		m, err := ParseMirror(tc.mirror)
		if err != nil {
			t.Fatal(err)
		}
		r, err := name.ParseReference(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		mr, err := m.ref(r)
		if err != nil || mr.Name() != tc.want {
			t.Errorf("mirror %s of %s = %v (%v), want %s", tc.mirror, tc.ref, mr, err, tc.want)
		}
	}
}
