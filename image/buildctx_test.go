// Tests of hostile build contexts: whiteout names, device nodes, FIFOs, names
// and symlinks leaving the context, setuid files; judged by the files on the
// host and by the built layer's content.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lastLayer returns the headers of the newest layer of image ref.
func lastLayer(t *testing.T, s *Store, ref string) map[string]*tar.Header {
	t.Helper()
	rec, err := s.getRec(ref)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.openLayer(rec.Layers[len(rec.Layers)-1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = h
	}
}

// hostSpecials lists setuid/setgid files, device nodes and FIFOs under dir.
func hostSpecials(t *testing.T, dir string) []string {
	t.Helper()
	var bad []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0 {
			bad = append(bad, p+" "+fi.Mode().String())
		}
		return nil
	})
	return bad
}

func TestBuildHostileContext(t *testing.T) {
	ctx := context.Background()
	outside := t.TempDir() // a host directory the context tries to reach
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	df := func(body string) entry { return entry{name: "Dockerfile", body: body} }
	const copyAll = "FROM base:1\nCOPY . /ctx/\n"
	for _, tc := range []struct {
		name    string
		entries []entry
		// inner, when set, is an archive added as "in.tar" (for ADD).
		inner []entry
		// wantErr: the build fails as invalid (400) and, when wantBefore, before any
		// step ran (so the API answers 400 JSON, not a stream).
		wantErr    bool
		wantIs     error // ErrInvalid unless set
		wantBefore bool
		// check inspects the built layer when the build succeeds.
		check func(t *testing.T, layer map[string]*tar.Header)
	}{
		{name: "whiteout of a base file", entries: []entry{df(copyAll), {name: ".wh.base"}}, wantErr: true, wantBefore: true},
		{name: "opaque whiteout", entries: []entry{df(copyAll), {name: ".wh..wh..opq"}}, wantErr: true, wantBefore: true},
		{name: "nested whiteout", entries: []entry{df(copyAll), {name: "sub/", typ: tar.TypeDir}, {name: "sub/.wh.x"}}, wantErr: true, wantBefore: true},
		{name: "whiteout directory", entries: []entry{df(copyAll), {name: ".wh.d/", typ: tar.TypeDir}, {name: ".wh.d/f"}}, wantErr: true, wantBefore: true},
		{name: "whiteout deleting a context file", entries: []entry{df("FROM base:1\nCOPY keep /keep\n"), {name: "keep", body: "k"}, {name: ".wh.keep"}}, wantErr: true, wantBefore: true},
		{name: "char device", entries: []entry{df(copyAll), {name: "null", typ: tar.TypeChar, mode: 0o666}}, wantErr: true, wantBefore: true},
		{name: "block device", entries: []entry{df(copyAll), {name: "disk", typ: tar.TypeBlock, mode: 0o660}}, wantErr: true, wantBefore: true},
		{name: "fifo", entries: []entry{df(copyAll), {name: "pipe", typ: tar.TypeFifo, mode: 0o644}}, wantErr: true, wantBefore: true},
		{name: "dot-dot name", entries: []entry{df(copyAll), {name: "../../../../../../../../" + strings.TrimPrefix(outside, "/") + "/dotdot", body: "x"}}, wantErr: true, wantBefore: true},
		{name: "absolute name", entries: []entry{df(copyAll), {name: outside + "/abs", body: "x"}}, wantErr: true, wantBefore: true},
		{name: "write through a symlink out", entries: []entry{df(copyAll), {name: "out", typ: tar.TypeSymlink, link: outside}, {name: "out/pwned", body: "x"}}, wantErr: true, wantBefore: true},
		{name: "hard link to a name out", entries: []entry{df(copyAll), {name: "hl", typ: tar.TypeLink, link: "../../../../../../../../" + strings.TrimPrefix(secret, "/")}}, wantErr: true, wantBefore: true},
		{name: "COPY through a symlink out", entries: []entry{df("FROM base:1\nCOPY out/secret /s\n"), {name: "out", typ: tar.TypeSymlink, link: outside}}, wantErr: true, wantIs: ErrNotFound},
		{name: "COPY a whiteout destination", entries: []entry{df("FROM base:1\nCOPY f /.wh.base\n"), {name: "f", body: "x"}}, wantErr: true},
		{name: "ADD an archive holding a whiteout", entries: []entry{df("FROM base:1\nADD in.tar /\n")}, inner: []entry{{name: ".wh.base"}}, wantErr: true},
		{name: "ADD an archive holding an opaque whiteout", entries: []entry{df("FROM base:1\nADD in.tar /d/\n")}, inner: []entry{{name: "x/.wh..wh..opq"}}, wantErr: true},
		{
			name:    "symlink out is copied as a link, not followed",
			entries: []entry{df("FROM base:1\nCOPY out /out\n"), {name: "out", typ: tar.TypeSymlink, link: secret}},
			check: func(t *testing.T, l map[string]*tar.Header) {
				if h := l["out"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != secret || h.Size != 0 {
					t.Errorf("out in the layer = %+v, want a symlink to %s", h, secret)
				}
			},
		},
		{
			name: "setuid and setgid kept in the layer",
			entries: []entry{df("FROM base:1\nCOPY . /ctx/\n"), {name: "suid", body: "s", mode: 0o4755}, {name: "sgid/", typ: tar.TypeDir, mode: 0o2775},
				{name: "sgid/f", body: "g", mode: 0o2711}, {name: "plain", body: "p", mode: 0o640}},
			check: func(t *testing.T, l map[string]*tar.Header) {
				for p, want := range map[string]int64{"ctx/suid": 0o4755, "ctx/sgid": 0o2775, "ctx/sgid/f": 0o2711, "ctx/plain": 0o640} {
					if h := l[p]; h == nil || h.Mode&0o7777 != want {
						t.Errorf("%s in the layer = %+v, want mode %o", p, h, want)
					}
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			ar, _ := dockerArchive(t, []string{"base:1"}, []string{"/x"}, tarOf(t, []entry{{name: "base", body: "base file"}}))
			if _, err := s.Load(ctx, bytes.NewReader(ar)); err != nil {
				t.Fatal(err)
			}
			es := tc.entries
			if tc.inner != nil {
				es = append(es, entry{name: "in.tar", body: string(tarOf(t, tc.inner))})
			}
			// A RUN step after the context is in place looks at the host's copy.
			var during []string
			runCheck := func(ctx context.Context, id string, cmd, env []string, workdir, user string, out io.Writer) (io.ReadCloser, error) {
				during = hostSpecials(t, s.Root())
				return io.NopCloser(bytes.NewReader(tarOf(t, nil))), nil
			}
			es[0].body += "RUN check\n"
			var out bytes.Buffer
			_, err := s.Build(ctx, bytes.NewReader(tarOf(t, es)), BuildOptions{Tags: []string{"built:1"}}, runCheck, &out)
			if tc.wantErr {
				want := ErrInvalid
				if tc.wantIs != nil {
					want = tc.wantIs
				}
				if !errors.Is(err, want) {
					t.Fatalf("build = %v, want %v (a 4xx); output:\n%s", err, want, out.String())
				}
				if tc.wantBefore && out.Len() != 0 {
					t.Errorf("refused after output began (the API could not answer 400):\n%s", out.String())
				}
				if _, err := s.Get("built:1"); err == nil {
					t.Error("an image was tagged")
				}
			} else {
				if err != nil {
					t.Fatalf("build: %v\n%s", err, out.String())
				}
				// the COPY step's image is the parent of the RUN step's
				rec, err := s.getRec("built:1")
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, lastLayer(t, s, rec.Parent))
			}
			if len(during) > 0 {
				t.Errorf("setuid/setgid files, devices or FIFOs on the host during the build: %v", during)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("the build wrote outside its context: %v", names)
			}
			if b, _ := os.ReadFile(secret); string(b) != "host secret" {
				t.Errorf("host secret changed: %q", b)
			}
			if bad := hostSpecials(t, s.Root()); len(bad) > 0 {
				t.Errorf("left on the host: %v", bad)
			}
		})
	}
}
