package image

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPushPull(t *testing.T) {
	reg := startRegistry(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	id := loadBusybox(t, s, "busybox:latest")
	base, _ := s.Get(id)
	// A committed image on top, so the pushed image has two layers.
	im, err := s.Commit(ctx, id, strings.NewReader(string(tarOf(t, []entry{{name: "hello", body: "world"}}))), CommitOptions{Repo: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	remote := reg + "/test/hello:v1"
	var events []Progress
	if err := s.Push(ctx, "hello", remote, nil, func(p Progress) { events = append(events, p) }); err != nil {
		t.Fatalf("push: %v", err)
	}
	if len(events) < 3 || !strings.Contains(events[0].Status, "The push refers to repository ["+reg+"/test/hello]") ||
		!strings.HasPrefix(events[len(events)-1].Status, "v1: digest: sha256:") {
		t.Errorf("push events: %+v", events)
	}

	s2 := openStore(t)
	var mu sync.Mutex
	var pev []Progress
	got, err := s2.Pull(ctx, remote, nil, func(p Progress) { mu.Lock(); pev = append(pev, p); mu.Unlock() })
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if got.ID != im.ID || got.Size != im.Size {
		t.Errorf("pulled %s (%d bytes), pushed %s (%d bytes)", got.ID, got.Size, im.ID, im.Size)
	}
	if len(got.RepoTags) != 1 || got.RepoTags[0] != remote || len(got.RepoDigests) != 1 {
		t.Errorf("tags %v digests %v", got.RepoTags, got.RepoDigests)
	}
	statuses := map[string]int{}
	for _, p := range pev {
		statuses[p.Status]++
	}
	if statuses["Pulling fs layer"] != 2 || statuses["Pull complete"] != 2 || statuses["Status: Downloaded newer image for "+remote] != 1 {
		t.Errorf("pull statuses %v", statuses)
	}
	dir, err := s2.RootfsDir(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hello")); string(b) != "world" {
		t.Errorf("hello = %q", b)
	}
	// Pull again: up to date; pulling the base after the child reuses its layer.
	pev = nil
	if _, err := s2.Pull(ctx, remote, nil, func(p Progress) { pev = append(pev, p) }); err != nil {
		t.Fatal(err)
	}
	if last := pev[len(pev)-1].Status; last != "Status: Image is up to date for "+remote {
		t.Errorf("second pull said %q", last)
	}
	if err := s.Push(ctx, "busybox", reg+"/library/busybox", nil, nil); err != nil {
		t.Fatal(err)
	}
	pev = nil
	b2, err := s2.Pull(ctx, reg+"/library/busybox", nil, func(p Progress) { pev = append(pev, p) })
	if err != nil || b2.ID != base.ID {
		t.Fatalf("pull base = %s, %v", b2.ID, err)
	}
	already := 0
	for _, p := range pev {
		if p.Status == "Already exists" {
			already++
		}
	}
	if already != 1 {
		t.Errorf("base layer downloaded again: %+v", pev)
	}
	// Unknown names and tags are ErrNotFound.
	if _, err := s2.Pull(ctx, reg+"/test/hello:nope", nil, nil); !errorsIs(err, ErrNotFound) {
		t.Errorf("pull of missing tag = %v", err)
	}
}

func TestRegistryAuth(t *testing.T) {
	reg := startRegistry(t, "alice", "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "s3cret", true},
		{"alice", "wrong", false},
		{"bob", "s3cret", false},
		{"", "", false},
	} {
		st, err := CheckAuth(ctx, AuthConfig{Username: tc.user, Password: tc.pass, ServerAddress: "http://" + reg}, nil)
		if tc.ok && (err != nil || st != "Login Succeeded") {
			t.Errorf("CheckAuth(%s/%s) = %q, %v", tc.user, tc.pass, st, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "unauthorized")) {
			t.Errorf("CheckAuth(%s/%s) = %q, %v; want unauthorized", tc.user, tc.pass, st, err)
		}
	}
	s := openStore(t)
	loadBusybox(t, s, "busybox")
	remote := reg + "/private/bb:1"
	if err := s.Push(ctx, "busybox", remote, &AuthConfig{Username: "alice", Password: "wrong"}, nil); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("push with bad credentials = %v", err)
	}
	if err := s.Push(ctx, "busybox", remote, &AuthConfig{Username: "alice", Password: "s3cret"}, nil); err != nil {
		t.Fatalf("push with good credentials: %v", err)
	}
	s2 := openStore(t)
	if _, err := s2.Pull(ctx, remote, &AuthConfig{Username: "alice", Password: "nope"}, nil); err == nil || !strings.Contains(err.Error(), "credentials rejected") {
		t.Errorf("pull with bad credentials = %v", err)
	}
	if _, err := s2.Pull(ctx, remote, nil, nil); err == nil {
		t.Errorf("anonymous pull from an auth registry succeeded")
	}
	if ents, _ := os.ReadDir(filepath.Join(s2.Root(), "blobs", "sha256")); len(ents) != 0 {
		t.Errorf("failed pulls left %d blobs", len(ents))
	}
	// Saved credentials (POST /auth) are used when a pull carries none.
	s3 := openStore(t)
	if err := s3.SaveAuth(AuthConfig{Username: "alice", Password: "s3cret", ServerAddress: "http://" + reg + "/v2/"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Pull(ctx, remote, nil, nil); err != nil {
		t.Errorf("pull with saved credentials: %v", err)
	}
	// They are in the store's database: a reopened store (daemon restart) still
	// has them (Pull asks the registry for the manifest again, so it needs them).
	root3 := s3.Root()
	s3.Close()
	s3, err := Open(root3)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if _, err := s3.Pull(ctx, remote, nil, nil); err != nil {
		t.Errorf("pull with credentials saved before a restart: %v", err)
	}
	// Build: X-Registry-Config credentials (per registry) pull a private FROM.
	df := tarOf(t, []entry{{name: "Dockerfile", body: "FROM " + remote + "\nCMD [\"sh\"]\n"}})
	s4 := openStore(t)
	if _, err := s4.Build(ctx, strings.NewReader(string(df)), BuildOptions{}, nil, nil); err == nil || !strings.Contains(err.Error(), "authentication required") {
		t.Errorf("build FROM a private image without credentials = %v", err)
	}
	if _, err := s4.Build(ctx, strings.NewReader(string(df)), BuildOptions{Auths: map[string]AuthConfig{
		"other.example.com": {Username: "x", Password: "y"}, "http://" + reg + "/v2/": {Username: "alice", Password: "s3cret"}}}, nil, nil); err != nil {
		t.Errorf("build FROM a private image with X-Registry-Config credentials: %v", err)
	}
	// The base64 "auth" field works as in Docker's AuthConfig.
	im, err := s2.Pull(ctx, remote, &AuthConfig{Auth: "YWxpY2U6czNjcmV0"}, nil)
	if err != nil {
		t.Fatalf("pull with auth field: %v", err)
	}
	if want, _ := s.Get("busybox"); im.ID != want.ID {
		t.Errorf("pulled %s want %s", im.ID, want.ID)
	}
}

func TestSkopeoInterop(t *testing.T) {
	skopeo := mustSkopeo(t)
	reg := startRegistry(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	id := loadBusybox(t, s, "busybox")
	// store -> registry -> skopeo (OCI layout) -> skopeo pushes under another name -> store.
	if err := s.Push(ctx, "busybox", reg+"/ours/bb:1", nil, nil); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(t.TempDir(), "oci")
	run(t, skopeo, "copy", "--src-tls-verify=false", "docker://"+reg+"/ours/bb:1", "oci:"+oci+":bb")
	// skopeo converts to OCI media types; the config (image id) is kept.
	idx, err := os.ReadFile(filepath.Join(oci, "index.json"))
	if err != nil || !strings.Contains(string(idx), "application/vnd.oci.image.manifest.v1+json") {
		t.Fatalf("skopeo OCI layout index: %s %v", idx, err)
	}
	run(t, skopeo, "copy", "--dest-tls-verify=false", "oci:"+oci+":bb", "docker://"+reg+"/theirs/bb:2")
	s2 := openStore(t)
	im, err := s2.Pull(ctx, reg+"/theirs/bb:2", nil, nil)
	if err != nil {
		t.Fatalf("pulling skopeo's push: %v", err)
	}
	// skopeo rewrote the docker config as an OCI config: the id is that config's digest.
	if want := skopeoConfigDigest(t, skopeo, "--tls-verify=false", "docker://"+reg+"/theirs/bb:2"); im.ID != want || im.ID == id {
		t.Errorf("skopeo's image has id %s, want %s (the config skopeo pushed; ours was %s)", im.ID, want, id)
	}
	if im.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("config lost in conversion: %+v", im.Config)
	}
	dir, err := s2.RootfsDir(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/busybox")); err != nil || fi.Size() < 1<<20 {
		t.Errorf("bin/busybox: %v", err)
	}
	out := run(t, skopeo, "inspect", "--tls-verify=false", "docker://"+reg+"/theirs/bb:2")
	if !strings.Contains(out, `"Os": "linux"`) {
		t.Errorf("skopeo inspect: %s", out)
	}
}

func TestOCIArchiveLoad(t *testing.T) {
	skopeo := mustSkopeo(t)
	s := openStore(t)
	ar, id := dockerArchive(t, []string{"busybox:latest"}, []string{"/bin/sh"}, busyboxLayer(t))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "d.tar"), ar, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, skopeo, "copy", "docker-archive:"+filepath.Join(dir, "d.tar"), "oci-archive:"+filepath.Join(dir, "o.tar")+":example.com/x/bb:7")
	f, err := os.Open(filepath.Join(dir, "o.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	refs, err := s.Load(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 {
		t.Fatalf("loaded %v", refs)
	}
	im, err := s.Get(refs[0])
	if want := skopeoConfigDigest(t, skopeo, "oci-archive:"+filepath.Join(dir, "o.tar")); err != nil || im.ID != want || refs[0] != "example.com/x/bb:7" {
		t.Errorf("OCI archive image %v: %s %v, want %s", refs, im.ID, err, id)
	}
	// And our docker-archive is readable by skopeo.
	var out strings.Builder
	if err := s.Save(context.Background(), &out, []string{im.ID}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "saved.tar"), []byte(out.String()), 0o600)
	insp := run(t, skopeo, "inspect", "--config", "docker-archive:"+filepath.Join(dir, "saved.tar"))
	if !strings.Contains(insp, `"/bin/sh"`) {
		t.Errorf("skopeo inspect of our save: %s", insp)
	}
}

// skopeoConfigDigest asks skopeo for the config digest in an image's manifest.
func skopeoConfigDigest(t *testing.T, skopeo string, args ...string) string {
	t.Helper()
	raw := run(t, skopeo, append([]string{"inspect", "--raw"}, args...)...)
	var m struct {
		Config struct{ Digest string }
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.Config.Digest == "" {
		t.Fatalf("skopeo inspect --raw: %v\n%s", err, raw)
	}
	return m.Config.Digest
}

// FROM an image that is not local pulls it (and pull=true pulls again).
func TestBuildPullsFrom(t *testing.T) {
	reg := startRegistry(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	id := loadBusybox(t, s, "busybox")
	if err := s.Push(ctx, "busybox", reg+"/base/bb:1", nil, nil); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t)
	df := tarOf(t, []entry{{name: "Dockerfile", body: "FROM " + reg + "/base/bb:1\nCMD [\"sh\"]\n"}})
	var pulls int
	var out strings.Builder
	im, err := s2.Build(ctx, strings.NewReader(string(df)), BuildOptions{Tags: []string{"child"}, Progress: func(p Progress) {
		if strings.HasPrefix(p.Status, "Status: ") {
			pulls++
		}
	}}, nil, &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if im.Parent != id || pulls != 1 || strings.Join(im.Config.Cmd, " ") != "sh" {
		t.Errorf("parent %s (want %s), pulls %d, cmd %v", im.Parent, id, pulls, im.Config.Cmd)
	}
	if _, err := s2.Build(ctx, strings.NewReader(string(df)), BuildOptions{Progress: func(p Progress) {
		if strings.HasPrefix(p.Status, "Status: ") {
			pulls++
		}
	}}, nil, nil); err != nil || pulls != 1 {
		t.Errorf("second build pulled again (%d) or failed: %v", pulls, err)
	}
	if _, err := s2.Build(ctx, strings.NewReader(string(df)), BuildOptions{Pull: true, Progress: func(p Progress) {
		if strings.HasPrefix(p.Status, "Status: Image is up to date") {
			pulls++
		}
	}}, nil, nil); err != nil || pulls != 2 {
		t.Errorf("pull=true did not pull (%d): %v", pulls, err)
	}
}
