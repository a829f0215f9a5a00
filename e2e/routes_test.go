package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/image/regtest"
)

// buildContext writes a tar build context holding only a Dockerfile.
func buildContext(t *testing.T, dockerfile string) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), Typeflag: tar.TypeReg})
	tw.Write([]byte(dockerfile))
	tw.Close()
	p := filepath.Join(t.TempDir(), "ctx.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestE2ERoutes fills what TestE2ELocal leaves out so that every route of
// the API reference is exercised against a real hyperd both with the Go
// client and with curl (the README's route table says which test does
// what): /info, /version and /list, labels, port mappings, container
// create/start/stop/kill/rename/remove and resize with the Go client;
// /pod/kill, /container/stop, DELETE /container, /attach, /container/commit,
// /image/load, /pod/unpause with curl; images list/save/remove with the Go
// client; and /auth, /image/build, /image/push (and /images/push),
// /image/create against a real registry with credentials, both ways.
func TestE2ERoutes(t *testing.T) {
	d, bin := suiteDaemon(t)
	c := d.c
	ctx := ctxT(t, 5*time.Minute)

	// --- /info, /version, /list (Go client)
	if info, err := c.Info(ctx); err != nil || info.SandboxDriver != suiteDriver() || info.Images < 1 {
		t.Fatalf("Info: %+v %v", info, err)
	}
	if v, err := c.Version(ctx); err != nil || v.APIVersion != api.APIVersion || v.Driver != suiteDriver() {
		t.Fatalf("Version: %+v %v", v, err)
	}
	if _, err := c.CreatePod(ctx, []byte(`{"id":"rt","containers":[
		{"image":"busybox","name":"rt-a","command":["sleep","1000"]},
		{"image":"busybox","name":"rt-b","command":["sleep","1000"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.StartPod(ctx, "rt"); err != nil {
		t.Fatalf("start: %v\n%s", err, d.log())
	}
	list := func(item, want string) {
		t.Helper()
		l, err := c.List(ctx, item, "rt")
		if err != nil {
			t.Fatalf("List %s: %v", item, err)
		}
		all := strings.Join(append(append(l.PodData, l.CData...), l.VMData...), " ")
		if !strings.Contains(all, want) {
			t.Fatalf("List %s: %q, want %q", item, all, want)
		}
	}
	list("pod", "rt:rt:")
	list("container", ":rt-b:rt:running")
	list("vm", ":rt:associated")
	if ps, err := c.PodStats(ctx, "rt"); err != nil || len(ps.ContainerStats) != 2 {
		t.Fatalf("PodStats: %+v %v", ps, err)
	}

	// --- labels (Go client)
	if err := c.SetLabels(ctx, "rt", map[string]string{"tier": "x"}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLabels(ctx, "rt", map[string]string{"tier": "y"}, false); client.StatusOf(err) != 409 {
		t.Fatalf("SetLabels over an existing key without override: %v, want 409", err)
	}
	if err := c.SetLabels(ctx, "rt", map[string]string{"tier": "y"}, true); err != nil {
		t.Fatal(err)
	}
	if pi, err := c.PodInfo(ctx, "rt"); err != nil || pi.Spec.Labels["tier"] != "y" {
		t.Fatalf("labels after override: %v %v", pi.Spec.Labels, err)
	}

	// --- port mappings at runtime (Go client)
	port := strconv.Itoa(freePort(t))
	pm := []api.PortMapping{{ContainerPort: "8080", HostPort: port, Protocol: "tcp"}}
	if err := c.UpdatePortMappings(ctx, "rt", "add", pm); err != nil {
		t.Fatal(err)
	}
	if got, err := c.PortMappings(ctx, "rt"); err != nil || len(got) != 1 || got[0].HostPort != port {
		t.Fatalf("PortMappings after add: %+v %v", got, err)
	}
	if err := c.UpdatePortMappings(ctx, "rt", "add", pm); client.StatusOf(err) != 409 {
		t.Fatalf("adding a mapped host port again: %v, want 409", err)
	}
	if err := c.UpdatePortMappings(ctx, "rt", "delete", pm); err != nil {
		t.Fatal(err)
	}
	if got, err := c.PortMappings(ctx, "rt"); err != nil || len(got) != 0 {
		t.Fatalf("PortMappings after delete: %+v %v", got, err)
	}

	// --- containers of a running pod (Go client)
	cid, err := c.CreateContainer(ctx, "rt", []byte(`{"image":"busybox","name":"side","command":["sh","-c","echo side-up; exec sleep 1000"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if ci, err := c.ContainerInfo(ctx, "side"); err != nil || ci.Status.Phase != "running" || ci.PodID != "rt" {
		t.Fatalf("ContainerInfo: %+v %v", ci, err)
	}
	if err := c.RenameContainer(ctx, "side", "side2"); err != nil {
		t.Fatal(err)
	}
	if err := c.StopContainer(ctx, "side2"); err != nil {
		t.Fatal(err)
	}
	if code, err := c.ExitCode(ctx, "side2", ""); err != nil || code != 143 {
		t.Fatalf("exit after StopContainer: %d %v, want 143", code, err)
	}
	if err := c.RemoveContainer(ctx, "side2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ContainerInfo(ctx, "side2"); client.StatusOf(err) != 404 {
		t.Fatalf("removed container: %v, want 404", err)
	}
	if _, err := c.CreateContainer(ctx, "rt", []byte(`{"image":"busybox","name":"kside","command":["sleep","1000"]}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.StartContainer(ctx, "kside"); err != nil {
		t.Fatal(err)
	}
	if err := c.KillContainer(ctx, "kside", 9); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.ExitCode(ctx, "kside", ""); code != 137 {
		t.Fatalf("exit after KillContainer 9: %d, want 137", code)
	}
	if err := c.RemoveContainer(ctx, "kside"); err != nil {
		t.Fatal(err)
	}

	// --- the same with curl: create, start, stop, DELETE /container
	d.expect("POST", "/container/create?podId=rt", `{"image":"busybox","name":"cside","command":["sleep","1000"]}`, 201, `"ID":"`)
	d.expect("POST", "/container/start?container=cside", "", 200, "{}")
	d.expect("POST", "/container/stop?container=cside", "", 200, "{}")
	d.expect("GET", "/exitcode?container=cside", "", 200, "143")
	if code, b := d.curl("DELETE", "/container?container=cside", ""); code != 204 {
		t.Fatalf("DELETE /container: %d %s", code, b)
	}
	d.expect("GET", "/container/info?container=cside", "", 404, "not found")

	// --- /attach with curl (no upgrade: 200 and Docker frames), output
	// from the first byte of a container that already exited
	d.expect("POST", "/container/create?podId=rt", `{"image":"busybox","name":"att","command":["sh","-c","echo attach-out; echo attach-err >&2"]}`, 201, `"ID":"`)
	d.expect("POST", "/container/start?container=att", "", 200, "{}")
	d.expect("GET", "/exitcode?container=att", "", 200, "0")
	code, b := d.curl("POST", "/attach?container=att&stdin=0", "")
	if so, se := demux(t, []byte(b)); code != 200 || so != "attach-out\n" || se != "attach-err\n" {
		t.Fatalf("curl attach: %d %q %q", code, so, se)
	}
	var lo, le bytes.Buffer
	if err := c.Logs(ctx, "att", client.LogsOptions{Stdout: true, Stderr: true}, false, &lo, &le); err != nil || lo.String() != "attach-out\n" || le.String() != "attach-err\n" {
		t.Fatalf("Logs: %q %q %v", lo.String(), le.String(), err)
	}

	// --- resize of a tty exec (Go client)
	eid, err := c.ExecCreate(ctx, "rt-a", []string{"sh", "-c", "read x; stty size"}, true)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.ExecStart(ctx, "rt-a", eid)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, "rt-a", eid, 123, 45); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	var so bytes.Buffer
	es.Pump(true, strings.NewReader("go\n"), &so, nil)
	if !strings.Contains(so.String(), "45 123") {
		t.Fatalf("stty size after Resize: %q", so.String())
	}

	// --- commit with curl; images list, save, remove with the Go client;
	// load with curl
	d.expect("POST", "/container/commit?container=rt-a&repo=e2e-rt&tag=v1&author=me&comment=routes", `{"Cmd":["echo","committed"]}`, 200, `"ID":"sha256:`)
	imgs, err := c.Images(ctx, false)
	if err != nil || !strings.Contains(strings.Join(imgs, " "), "e2e-rt:v1:") {
		t.Fatalf("Images: %v %v", imgs, err)
	}
	saved := filepath.Join(t.TempDir(), "saved.tar")
	f, err := os.Create(saved)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Save(ctx, []string{"e2e-rt:v1"}, f)
	f.Close()
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if items, err := c.RemoveImage(ctx, "e2e-rt:v1", false, false); err != nil || len(items) == 0 {
		t.Fatalf("RemoveImage: %+v %v", items, err)
	}
	if code, b := d.curl("POST", "/image/load", "@"+saved); code != 200 || !strings.Contains(b, "e2e-rt:v1") {
		t.Fatalf("curl /image/load: %d %s", code, b)
	}
	if out, err := d.hyperctl(bin, "run", "--rm", "e2e-rt:v1"); err != nil || out != "committed\n" {
		t.Fatalf("run the committed, saved and loaded image: %q %v", out, err)
	}

	// --- /pod/kill: Go client (one container, TERM), curl (KILL)
	if err := c.KillPod(ctx, "rt", "rt-b", 15); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.ExitCode(ctx, "rt-b", ""); code != 143 {
		t.Fatalf("rt-b after KillPod TERM: %d, want 143", code)
	}
	d.expect("POST", "/pod/kill?podName=rt&container=rt-a&signal=9", "", 200, `"ID":"rt"`)
	d.expect("GET", "/exitcode?container=rt-a", "", 200, "137")
	d.expect("POST", "/pod/unpause?podId=rt", "", 501, "pause")

	// --- /pod/stop and DELETE /pod with the Go client
	if _, err := c.CreatePod(ctx, []byte(`{"id":"rt-stop","containers":[{"image":"busybox","name":"rts","command":["sleep","1000"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.StartPod(ctx, "rt-stop"); err != nil {
		t.Fatal(err)
	}
	if err := c.StopPod(ctx, "rt-stop"); err != nil {
		t.Fatalf("StopPod: %v", err)
	}
	if code, _ := c.ExitCode(ctx, "rts", ""); code != 143 {
		t.Fatalf("exit after StopPod: %d, want 143", code)
	}
	if err := c.RemovePod(ctx, "rt-stop"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PodInfo(ctx, "rt-stop"); client.StatusOf(err) != 404 {
		t.Fatalf("PodInfo after RemovePod: %v, want 404", err)
	}

	// --- a registry with credentials: /auth, /image/build, /image/push,
	// /image/create, with the Go client and curl
	reg := regtest.Start(t, "e2euser", "e2epass")
	good := api.AuthConfig{Username: "e2euser", Password: "e2epass", ServerAddress: reg}
	if _, err := c.Auth(ctx, api.AuthConfig{Username: "e2euser", Password: "wrong", ServerAddress: reg}); client.StatusOf(err) != 401 {
		t.Fatalf("Auth with a wrong password: %v, want 401", err)
	}
	ab, _ := json.Marshal(good)
	authHdr := "X-Registry-Auth: " + base64.URLEncoding.EncodeToString(ab)
	ref1, ref2 := reg+"/e2e/routes:1", reg+"/e2e/routes:2"
	if err := c.Build(ctx, bytes.NewReader(mustRead(t, buildContext(t, "FROM busybox\nENV ROUTE=built-by-go\nCMD [\"sh\", \"-c\", \"echo $ROUTE\"]\n"))), []string{ref1}, "", nil); err != nil {
		t.Fatalf("Build (Go client): %v\n%s", err, d.log())
	}
	if code, b := d.curl("POST", "/image/build?t="+q(ref2), "@"+buildContext(t, "FROM busybox\nENV ROUTE=built-by-curl\nCMD [\"sh\", \"-c\", \"echo $ROUTE\"]\n")); code != 200 || strings.Contains(b, `"error"`) {
		t.Fatalf("curl /image/build: %d %s", code, b)
	}
	// no credentials yet: the registry refuses the push
	if err := c.Push(ctx, ref1, nil, nil); err == nil {
		t.Fatal("Push without credentials to a registry that wants them succeeded")
	}
	if err := c.Push(ctx, ref1, &good, nil); err != nil {
		t.Fatalf("Push (Go client, X-Registry-Auth): %v\n%s", err, d.log())
	}
	if code, b := d.curl("POST", "/images/push?remote="+q(reg+"/e2e/routes")+"&tag=2", "", authHdr); code != 200 || strings.Contains(b, `"error"`) {
		t.Fatalf("curl /images/push: %d %s", code, b)
	}
	for _, r := range []string{ref1, ref2} {
		if _, err := c.RemoveImage(ctx, r, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if code, b := d.curl("POST", "/image/create?imageName="+q(ref2), "", authHdr); code != 200 || strings.Contains(b, `"error"`) {
		t.Fatalf("curl /image/create (pull): %d %s", code, b)
	}
	// /auth with curl and the Go client: accepted credentials are kept, so
	// a pull without X-Registry-Auth works afterwards
	d.expect("POST", "/auth", string(ab), 200, `"Status"`)
	if st, err := c.Auth(ctx, good); err != nil || st == "" {
		t.Fatalf("Auth: %q %v", st, err)
	}
	if err := c.Pull(ctx, ref1, nil, nil); err != nil {
		t.Fatalf("Pull (Go client, saved credentials): %v", err)
	}
	for r, want := range map[string]string{ref1: "built-by-go\n", ref2: "built-by-curl\n"} {
		if out, err := d.hyperctl(bin, "run", "--rm", r); err != nil || out != want {
			t.Errorf("run pulled %s: %q %v, want %q", r, out, err, want)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
