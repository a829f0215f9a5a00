package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// overlayRun is a RunFunc like the daemon's, on the host: the image's rootfs is the
// lower dir of an overlay mount, the command runs chrooted in it, and the upper dir
// becomes the layer (overlay whiteouts turned into OCI whiteouts).
func overlayRun(t *testing.T, s *Store) RunFunc {
	return func(ctx context.Context, id string, cmd, env []string, workdir, user string, out io.Writer) (io.ReadCloser, error) {
		lower, err := s.RootfsDir(ctx, id)
		if err != nil {
			return nil, err
		}
		d := t.TempDir()
		upper, work, merged := filepath.Join(d, "u"), filepath.Join(d, "w"), filepath.Join(d, "m")
		for _, p := range []string{upper, work, merged} {
			os.Mkdir(p, 0o755)
		}
		if err := syscall.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
			t.Fatalf("build tests mount overlayfs (run as root with overlay support): %v", err)
		}
		if workdir == "" {
			workdir = "/"
		}
		os.MkdirAll(filepath.Join(merged, workdir), 0o755)
		c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: merged}
		c.Dir, c.Env, c.Stdout, c.Stderr = workdir, env, out, out
		err = c.Run()
		if uerr := syscall.Unmount(merged, 0); uerr != nil && err == nil {
			err = uerr
		}
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		err = filepath.WalkDir(upper, func(p string, de fs.DirEntry, err error) error {
			if err != nil || p == upper {
				return err
			}
			rel, _ := filepath.Rel(upper, p)
			fi, err := de.Info()
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
				return tw.WriteHeader(&tar.Header{Name: filepath.Join(filepath.Dir(rel), ".wh."+fi.Name()), Typeflag: tar.TypeReg})
			}
			var link string
			if fi.Mode()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			}
			hdr, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			hdr.Name, hdr.Uid, hdr.Gid = rel, int(st.Uid), int(st.Gid)
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if fi.IsDir() {
				v := make([]byte, 1)
				if n, _ := unix.Lgetxattr(p, "trusted.overlay.opaque", v); n == 1 && v[0] == 'y' {
					return tw.WriteHeader(&tar.Header{Name: filepath.Join(rel, ".wh..wh..opq"), Typeflag: tar.TypeReg})
				}
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = io.Copy(tw, f)
				return err
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		tw.Close()
		return io.NopCloser(&buf), nil
	}
}

const testDockerfile = `# a test build
ARG BASE=busybox
FROM ${BASE}
ARG GREETING=hello
ENV APP=/app \
    PATH=/bin
WORKDIR $APP
COPY greet.txt ./
ADD files.tar.gz /opt/
RUN echo "$GREETING from run in $(pwd)" > /app/run.txt && rm /etc/passwd
COPY dir /data/
EXPOSE 8080
LABEL a=b
CMD ["cat", "/app/run.txt"]
`

func buildContext(t *testing.T, dockerfile string) []byte {
	var inner bytes.Buffer
	zw := gzip.NewWriter(&inner)
	zw.Write(tarOf(t, []entry{{name: "f1", body: "one"}, {name: "sub/", typ: tar.TypeDir}, {name: "sub/f2", body: "two"}}))
	zw.Close()
	return tarOf(t, []entry{
		{name: "Dockerfile", body: dockerfile},
		{name: "greet.txt", body: "greetings"},
		{name: "files.tar.gz", body: inner.String()},
		{name: "dir/", typ: tar.TypeDir}, {name: "dir/sub/", typ: tar.TypeDir}, {name: "dir/sub/x", body: "x"},
	})
}

func compressWith(t *testing.T, tool string, b []byte) []byte {
	if tool == "" {
		return b
	}
	c := exec.Command(tool, "-c")
	c.Stdin = bytes.NewReader(b)
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v (install it: gzip, bzip2, xz-utils)", tool, err)
	}
	return out
}

func TestBuild(t *testing.T) {
	s := openStore(t)
	loadBusybox(t, s, "busybox")
	ctx := context.Background()
	bctx := buildContext(t, testDockerfile)
	var out bytes.Buffer
	im, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{Tags: []string{"built:1"}}, overlayRun(t, s), &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Step 12/12 : CMD") || !strings.Contains(out.String(), "Successfully tagged built:1") {
		t.Errorf("output:\n%s", out.String())
	}
	c := im.Config
	if strings.Join(c.Cmd, " ") != "cat /app/run.txt" || c.WorkingDir != "/app" || strings.Join(c.Env, ",") != "PATH=/bin,APP=/app" ||
		c.Labels["a"] != "b" || len(c.ExposedPorts) != 1 || im.RepoTags[0] != "built:1" {
		t.Errorf("config %+v tags %v", c, im.RepoTags)
	}
	dir, err := s.RootfsDir(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"app/greet.txt", "greetings"}, {"opt/f1", "one"}, {"opt/sub/f2", "two"}, {"data/sub/x", "x"},
		{"app/run.txt", "hello from run in /app\n"}, {"etc/passwd", ""},
	} {
		b, err := os.ReadFile(filepath.Join(dir, tc.path))
		if tc.want == "" {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s should be deleted by RUN: %v", tc.path, err)
			}
		} else if string(b) != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.path, b, err, tc.want)
		}
	}
	// The same context in every supported compression is fully cached.
	for _, tool := range []string{"", "gzip", "bzip2", "xz"} {
		out.Reset()
		im2, err := s.Build(ctx, bytes.NewReader(compressWith(t, tool, bctx)), BuildOptions{}, overlayRun(t, s), &out)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if im2.ID != im.ID || strings.Count(out.String(), "Using cache") != 9 {
			t.Errorf("%s context: id %s (want %s), output:\n%s", tool, im2.ID, im.ID, out.String())
		}
	}
	// A different build arg invalidates the RUN step only; nocache rebuilds everything.
	out.Reset()
	im3, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{BuildArgs: map[string]string{"GREETING": "hi"}, Quiet: true}, overlayRun(t, s), &out)
	if err != nil || im3.ID == im.ID || strings.TrimSpace(out.String()) != im3.ID {
		t.Fatalf("build-arg build: %s %v, output %q", im3.ID, err, out.String())
	}
	d3, _ := s.RootfsDir(ctx, im3.ID)
	if b, _ := os.ReadFile(filepath.Join(d3, "app/run.txt")); string(b) != "hi from run in /app\n" {
		t.Errorf("run.txt with build arg = %q", b)
	}
	im4, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{NoCache: true}, overlayRun(t, s), io.Discard)
	if err != nil || im4.ID == im.ID {
		t.Errorf("nocache build: %s %v", im4.ID, err)
	}
	// Removing the image (and its now childless intermediates) drops their cache entries.
	if _, err := s.Remove(im4.ID, false, false, nil); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *boltTx) error {
		return tx.Bucket(bCache).ForEach(func(k, v []byte) error {
			if tx.Bucket(bImages).Get(v) == nil {
				t.Errorf("cache entry %x -> deleted image %s", k, v)
			}
			return nil
		})
	})
	// A changed COPY source invalidates its step.
	changed := buildContext(t, strings.Replace(testDockerfile, "greet.txt ./", "greet.txt ./g2", 1))
	out.Reset()
	if _, err := s.Build(ctx, bytes.NewReader(changed), BuildOptions{}, overlayRun(t, s), &out); err != nil || strings.Count(out.String(), "Using cache") != 2 {
		t.Errorf("changed COPY: %v\n%s", err, out.String())
	}
}

func TestBuildErrors(t *testing.T) {
	s := openStore(t)
	loadBusybox(t, s, "busybox")
	for _, tc := range []struct {
		name, dockerfile string
		want             error
	}{
		{"no FROM", "RUN true\n", ErrInvalid},
		{"missing COPY source", "FROM busybox\nCOPY nope /x\n", ErrNotFound},
		{"unknown instruction", "FROM busybox\nHEALTHCHECK NONE\n", ErrInvalid},
		{"bad port", "FROM busybox\nEXPOSE 99999\n", ErrInvalid},
		{"RUN on scratch", "FROM scratch\nRUN true\n", ErrInvalid},
		{"failing RUN", "FROM busybox\nRUN exit 3\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Build(context.Background(), bytes.NewReader(buildContext(t, tc.dockerfile)), BuildOptions{}, overlayRun(t, s), io.Discard)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Build = %v, want %v", err, tc.want)
			}
		})
	}
	// .dockerignore hides files from COPY.
	ignored := tarOf(t, []entry{{name: "Dockerfile", body: "FROM busybox\nCOPY . /ctx/\n"}, {name: ".dockerignore", body: "*.secret\nbig/\n"},
		{name: "a.secret", body: "s"}, {name: "ok.txt", body: "ok"}, {name: "big/", typ: tar.TypeDir}, {name: "big/f", body: "f"}})
	im, err := s.Build(context.Background(), bytes.NewReader(ignored), BuildOptions{}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.RootfsDir(context.Background(), im.ID)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"ctx/ok.txt": true, "ctx/Dockerfile": true, "ctx/a.secret": false, "ctx/big": false} {
		if _, err := os.Lstat(filepath.Join(d, p)); (err == nil) != want {
			t.Errorf("%s present=%v, want %v", p, err == nil, want)
		}
	}
	// COPY of a file to an existing directory without a trailing slash goes inside it.
	into := tarOf(t, []entry{{name: "Dockerfile", body: "FROM busybox\nCOPY f /etc\nCOPY f /newname\n"}, {name: "f", body: "F"}})
	im, err = s.Build(context.Background(), bytes.NewReader(into), BuildOptions{}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, _ = s.RootfsDir(context.Background(), im.ID)
	for p, want := range map[string]string{"etc/f": "F", "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "newname": "F"} {
		if b, err := os.ReadFile(filepath.Join(d, p)); string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	// No Dockerfile at the given path.
	if _, err := s.Build(context.Background(), bytes.NewReader(buildContext(t, "FROM busybox\n")), BuildOptions{Dockerfile: "other/Dockerfile"}, nil, io.Discard); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing Dockerfile: %v", err)
	}
}

// The config-only instructions, MAINTAINER, and WORKDIR creating missing
// directories (through symlinks of the image, leaving existing ones alone).
func TestBuildConfigInstructions(t *testing.T) {
	s := openStore(t)
	loadBusybox(t, s, "busybox")
	ctx := context.Background()
	df := "FROM busybox\nMAINTAINER Jane <jane@example.com>\nCOPY lnk /lnk\nWORKDIR /lnk/sub\nWORKDIR deeper\nWORKDIR /etc\n" +
		"USER 1000:1000\nVOLUME /data /x\nVOLUME [\"/y\"]\nENTRYPOINT [\"/bin/echo\"]\nCMD hello\nSTOPSIGNAL SIGINT\nLABEL k=v\nEXPOSE 53/udp 80\nENV A=1 B=\"two words\"\n"
	bctx := tarOf(t, []entry{{name: "Dockerfile", body: df}, {name: "lnk", typ: tar.TypeSymlink, link: "/tmp"}})
	var out bytes.Buffer
	im, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{}, nil, &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	c := im.Config
	if c.User != "1000:1000" || c.WorkingDir != "/etc" || strings.Join(c.Entrypoint, " ") != "/bin/echo" ||
		strings.Join(c.Cmd, " ") != "/bin/sh -c hello" || c.StopSignal != "SIGINT" || c.Labels["k"] != "v" ||
		strings.Join(c.Env[len(c.Env)-2:], ",") != "A=1,B=two words" {
		t.Errorf("config %+v", c)
	}
	for _, v := range []string{"/data", "/x", "/y"} {
		if _, ok := c.Volumes[v]; !ok {
			t.Errorf("volumes %v lack %s", c.Volumes, v)
		}
	}
	if _, ok := c.ExposedPorts["80/tcp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("ports %v", c.ExposedPorts)
	}
	raw, err := s.readBlob(im.ID)
	if err != nil {
		t.Fatal(err)
	}
	var cf struct {
		Author string
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(raw, &cf); err != nil || cf.Author != "Jane <jane@example.com>" {
		t.Errorf("author %q %v", cf.Author, err)
	}
	// busybox + COPY + the two WORKDIRs that created directories; WORKDIR /etc adds none.
	if len(cf.RootFS.DiffIDs) != 4 {
		t.Errorf("%d layers, want 4 (busybox, COPY, WORKDIR /lnk/sub, WORKDIR deeper)", len(cf.RootFS.DiffIDs))
	}
	dir, err := s.RootfsDir(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "lnk")); err != nil || l != "/tmp" {
		t.Errorf("the symlink WORKDIR went through was replaced: %q %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp/sub/deeper")); err != nil || !fi.IsDir() {
		t.Errorf("WORKDIR did not create tmp/sub/deeper: %v", err)
	}
	// WORKDIR on a file is an error.
	bad := tarOf(t, []entry{{name: "Dockerfile", body: "FROM busybox\nWORKDIR /etc/passwd\n"}})
	if _, err := s.Build(ctx, bytes.NewReader(bad), BuildOptions{}, nil, io.Discard); !errors.Is(err, ErrInvalid) {
		t.Errorf("WORKDIR on a file: %v", err)
	}
	// q: only the id, nothing of the steps.
	out.Reset()
	im2, err := s.Build(ctx, bytes.NewReader(bctx), BuildOptions{Quiet: true}, nil, &out)
	if err != nil || out.String() != im2.ID+"\n" || im2.ID != im.ID {
		t.Errorf("quiet build: %q (id %s, first build %s) %v", out.String(), im2.ID, im.ID, err)
	}
}
