// Tests of the GC race: a load, commit or build stopped at the exact point where
// its blobs are in blobs/ but its image is not yet registered, while an `rmi`
// (and the GC it runs) goes on; the image must then come out complete and usable.
package image

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// stopAt makes s's operations stop at the first (event, digest) matching want
// (digest "" matches any) until the test lets them go: it returns a channel
// that receives once the point is reached and a func that lets the operation
// finish.
func stopAt(s *Store, event string, want func(digest string) bool) (reached <-chan string, proceed func()) {
	r := make(chan string, 1)
	p := make(chan struct{})
	fired := false
	s.testHook = func(ev, d string) {
		if ev != event || fired || !want(d) {
			return
		}
		fired = true // only the operation's goroutine calls the hook
		r <- d
		<-p
	}
	return r, func() { close(p) }
}

// checkComplete asserts that every blob of the image ref names is stored, that it
// saves (every blob read) and that its rootfs holds files with the given content.
func checkComplete(t *testing.T, s *Store, ref string, files map[string]string) {
	t.Helper()
	rec, err := s.getRec(ref)
	if err != nil {
		t.Fatalf("image %s: %v", ref, err)
	}
	for _, d := range append([]string{rec.ID, rec.Manifest}, layerDigests(rec)...) {
		if !s.hasBlob(d) {
			t.Errorf("image %s: blob %s was removed by the GC", ref, d)
		}
	}
	if err := s.Save(context.Background(), io.Discard, []string{rec.ID}); err != nil {
		t.Errorf("save %s: %v", ref, err)
	}
	dir, err := s.RootfsDir(context.Background(), rec.ID)
	if err != nil {
		t.Fatalf("rootfs of %s: %v", ref, err)
	}
	for p, want := range files {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("%s in %s = %q, %v; want %q", p, ref, b, err, want)
		}
	}
}

func layerDigests(r *imageRec) []string {
	var out []string
	for _, l := range r.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// TestGCRacesInFlightImages: before leases, a GC between "blob written" and
// "image registered" removed the new blobs (load dereferenced a nil FileInfo of
// its vanished layer; commit lost its new layer, its manifest, and the layers of
// a parent removed meanwhile) and the image was registered incomplete.
func TestGCRacesInFlightImages(t *testing.T) {
	ctx := context.Background()
	baseLayer := tarOf(t, []entry{{name: "base", body: "from the parent"}})
	newLayer := tarOf(t, []entry{{name: "new", body: "committed"}})
	// commitOnParent loads parent:1 and returns the commit of child on it
	commitOnParent := func(t *testing.T, s *Store) (func() error, string) {
		ar, _ := dockerArchive(t, []string{"parent:1"}, []string{"/x"}, baseLayer)
		if _, err := s.Load(ctx, bytes.NewReader(ar)); err != nil {
			t.Fatal(err)
		}
		return func() error {
			_, err := s.Commit(ctx, "parent:1", bytes.NewReader(newLayer), CommitOptions{Repo: "child"})
			return err
		}, "child:latest"
	}
	for _, tc := range []struct {
		name  string
		event string
		want  func(digest string) bool // nil: the first event
		// setup prepares the store and returns the operation to stop and the ref of
		// its image; meanwhile runs while the operation is stopped.
		setup     func(t *testing.T, s *Store) (op func() error, ref string)
		meanwhile func(t *testing.T, s *Store)
		files     map[string]string
	}{
		{
			name: "load, GC as its layer lands", event: "stored",
			want: func(d string) bool { return d == digestOf(newLayer) },
			setup: func(t *testing.T, s *Store) (func() error, string) {
				ar, _ := dockerArchive(t, []string{"loaded:1"}, []string{"/x"}, newLayer)
				return func() error { _, err := s.Load(ctx, bytes.NewReader(ar)); return err }, "loaded:1"
			},
			meanwhile: func(t *testing.T, s *Store) {
				if err := s.GC(); err != nil {
					t.Error(err)
				}
			},
			files: map[string]string{"new": "committed"},
		},
		{
			name: "load, rmi of another image before registration", event: "register",
			setup: func(t *testing.T, s *Store) (func() error, string) {
				other, _ := dockerArchive(t, []string{"other:1"}, []string{"/y"}, baseLayer)
				if _, err := s.Load(ctx, bytes.NewReader(other)); err != nil {
					t.Fatal(err)
				}
				ar, _ := dockerArchive(t, []string{"loaded:1"}, []string{"/x"}, newLayer)
				return func() error { _, err := s.Load(ctx, bytes.NewReader(ar)); return err }, "loaded:1"
			},
			meanwhile: func(t *testing.T, s *Store) {
				if _, err := s.Remove("other:1", false, false, nil); err != nil {
					t.Error(err)
				}
			},
			files: map[string]string{"new": "committed"},
		},
		{
			name: "commit, GC as its layer lands", event: "stored",
			setup: commitOnParent,
			meanwhile: func(t *testing.T, s *Store) {
				if err := s.GC(); err != nil {
					t.Error(err)
				}
			},
			files: map[string]string{"base": "from the parent", "new": "committed"},
		},
		{
			name: "commit, rmi -f of its parent before registration", event: "register",
			setup: commitOnParent,
			meanwhile: func(t *testing.T, s *Store) {
				if _, err := s.Remove("parent:1", true, false, nil); err != nil {
					t.Error(err)
				}
			},
			files: map[string]string{"base": "from the parent", "new": "committed"},
		},
		{
			name: "build, rmi -f of its FROM image before the COPY step registers", event: "register",
			setup: func(t *testing.T, s *Store) (func() error, string) {
				ar, _ := dockerArchive(t, []string{"base:1"}, []string{"/x"}, baseLayer)
				if _, err := s.Load(ctx, bytes.NewReader(ar)); err != nil {
					t.Fatal(err)
				}
				bctx := tarOf(t, []entry{{name: "Dockerfile", body: "FROM base:1\nCOPY new /new\n"}, {name: "new", body: "committed"}})
				return func() error {
					_, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{Tags: []string{"built:1"}}, nil, io.Discard)
					return err
				}, "built:1"
			},
			meanwhile: func(t *testing.T, s *Store) {
				if _, err := s.Remove("base:1", true, false, nil); err != nil {
					t.Error(err)
				}
			},
			files: map[string]string{"base": "from the parent", "new": "committed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			op, ref := tc.setup(t, s)
			want := tc.want
			if want == nil {
				want = func(string) bool { return true }
			}
			reached, proceed := stopAt(s, tc.event, want)
			done := make(chan error, 1)
			go func() { done <- op() }()
			select {
			case <-reached:
			case err := <-done:
				t.Fatalf("the operation ended (%v) without reaching %q", err, tc.event)
			}
			tc.meanwhile(t, s)
			proceed()
			if err := <-done; err != nil {
				t.Fatalf("operation: %v", err)
			}
			s.testHook = nil
			checkComplete(t, s, ref, tc.files)
			// Nothing stays pinned once the operation is over: a later GC may
			// take what no image holds.
			s.mu.Lock()
			n := len(s.pending)
			s.mu.Unlock()
			if n != 0 {
				t.Errorf("%d digests still pinned after the operation", n)
			}
		})
	}
}
