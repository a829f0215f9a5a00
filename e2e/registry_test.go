package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/image/regtest"
)

// TestE2ERegistry runs the image life cycle through a real hyperd (local
// driver) against Debian's docker-registry: push, rmi, pull (NDJSON
// progress), run, commit, push the commit, pull it back and run it, a
// Dockerfile build through POST /image/build and its cache, interop with
// skopeo both ways, and registries with htpasswd auth where POST /auth and
// hyperctl login store the credentials that later pulls and pushes use
// (also after a daemon restart).
func TestE2ERegistry(t *testing.T) {
	requireHost(t)
	skopeo := regtest.Skopeo(t)
	bin := binaries(t)
	reg := regtest.Start(t, "", "")
	regA := regtest.Start(t, "alice", "s3cret")
	regB := regtest.Start(t, "bob", "hunter2")
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "hyper.sock")
	root := filepath.Join(tmp, "root")
	driver := suiteDriver()
	d := startDaemon(t, bin, root, sock, driver, driverFlags(t, driver)...)
	defer func() { d.signal(syscall.SIGTERM) }()
	ctx := ctxT(t, 3*time.Minute)
	home := filepath.Join(tmp, "home")
	hctl := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "hyperctl"), append([]string{"-H", "unix://" + sock}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	run := func(image string, args ...string) string {
		t.Helper()
		out, err := hctl(append([]string{"run", "--rm", image}, args...)...)
		if err != nil {
			t.Fatalf("hyperctl run %s: %v\n%s\nhyperd log:\n%s", image, err, out, d.log())
		}
		return out
	}
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	load := func(tag string) string {
		t.Helper()
		var arch bytes.Buffer
		if err := imgtest.Write(&arch, bb, tag); err != nil {
			t.Fatal(err)
		}
		names, err := d.c.Load(ctx, &arch)
		if err != nil || len(names) != 1 {
			t.Fatalf("load %s: %v %v", tag, names, err)
		}
		return names[0]
	}

	// --- push a busybox made from busybox-static, rmi it, pull it through hyperd, run it
	base := reg + "/e2e/busybox:1"
	load(base)
	msgs := regStream(t, d, "/image/push?remote="+url.QueryEscape(reg+"/e2e/busybox")+"&tag=1", "")
	if st := msgs[len(msgs)-1].Status; !strings.HasPrefix(st, "1: digest: sha256:") || !hasStatus(msgs, "Pushed") {
		t.Fatalf("push stream ends with %q:\n%s", st, dump(msgs))
	}
	rmi(t, d, base)
	msgs = regStream(t, d, "/image/create?imageName="+url.QueryEscape(base), "")
	checkPull(t, msgs, base, 1, 0)
	if out := run(base, "echo", "pulled through hyperd"); out != "pulled through hyperd\n" {
		t.Errorf("run the pulled image: %q", out)
	}
	d.expect("POST", "/image/create?imageName="+url.QueryEscape(reg+"/e2e/nothing:1"), "", 200, "not found")

	// --- commit a container with a changed file, push it, rmi, pull it back, run it
	if _, err := d.c.CreatePod(ctx, []byte(`{"id":"reg-commit","containers":[{"image":"`+base+`","name":"committer","command":["sleep","1000"]}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.c.StartPod(ctx, "reg-commit"); err != nil {
		t.Fatalf("start: %v\n%s", err, d.log())
	}
	eid, err := d.c.ExecCreate(ctx, "committer", []string{"sh", "-c", "echo changed-in-container > /changed.txt"}, false)
	if err != nil {
		t.Fatal(err)
	}
	es, err := d.c.ExecStart(ctx, "committer", eid)
	if err != nil {
		t.Fatal(err)
	}
	es.Pump(false, nil, nil, nil)
	if code, err := d.c.ExitCode(ctx, "committer", eid); code != 0 || err != nil {
		t.Fatalf("exec: %d %v", code, err)
	}
	committed := reg + "/e2e/committed:v2"
	if _, err := d.c.Commit(ctx, "committer", reg+"/e2e/committed", "v2", "e2e", "registry round trip", map[string]any{"Cmd": []string{"cat", "/changed.txt"}}); err != nil {
		t.Fatalf("commit: %v\n%s", err, d.log())
	}
	d.expect("DELETE", "/pod?podId=reg-commit", "", 200, `"ID":"reg-commit"`)
	regStream(t, d, "/image/push?remote="+url.QueryEscape(reg+"/e2e/committed")+"&tag=v2", "")
	rmi(t, d, committed)
	msgs = regStream(t, d, "/image/create?imageName="+url.QueryEscape(committed), "")
	checkPull(t, msgs, committed, 1, 1) // the busybox layer is already here
	if out := run(committed); out != "changed-in-container\n" {
		t.Errorf("run the commit pulled back: %q", out)
	}

	// --- build from a Dockerfile (tar context through POST /image/build) and run the result
	df := "FROM " + committed + "\n" +
		"RUN echo built-by-run | tee /built.txt\n" +
		"COPY msg.txt /app/msg.txt\n" +
		"ENV WHO=hyperd\n" +
		"WORKDIR /work/dir\n" +
		"RUN echo \"run in $(pwd) as $WHO\" > note.txt\n" +
		"CMD [\"sh\", \"-c\", \"cat /built.txt /app/msg.txt /changed.txt note.txt\"]\n"
	ctxFile := filepath.Join(tmp, "context.tar")
	writeContext(t, ctxFile, map[string]string{"Dockerfile": df, "msg.txt": "copied-from-context\n"})
	built := reg + "/e2e/built:1"
	msgs = regStream(t, d, "/image/build?t="+url.QueryEscape(built), "@"+ctxFile)
	out := streamText(msgs)
	for _, want := range []string{"Step 1/7 : FROM " + committed + "\n", "Step 2/7 : RUN echo built-by-run", " ---> Running in build-",
		"built-by-run\n", "Removing intermediate container build-", "Step 7/7 : CMD", "Successfully built ", "Successfully tagged " + built + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	id := auxID(t, msgs)
	if got := run(built); got != "built-by-run\ncopied-from-context\nchanged-in-container\nrun in /work/dir as hyperd\n" {
		t.Errorf("run the built image: %q", got)
	}
	// The same build again is all cache: no step runs; nocache runs them again.
	msgs = regStream(t, d, "/image/build?t="+url.QueryEscape(built), "@"+ctxFile)
	if out := streamText(msgs); strings.Count(out, "Using cache") != 6 || strings.Contains(out, "Running in") || auxID(t, msgs) != id {
		t.Errorf("rebuild (want 6 cached steps, same id %s):\n%s", id, out)
	}
	msgs = regStream(t, d, "/image/build?nocache=1&q=1", "@"+ctxFile)
	if nid := auxID(t, msgs); nid == id || streamText(msgs) != nid+"\n" {
		t.Errorf("nocache quiet build: id %s (cached %s), output %q", nid, id, streamText(msgs))
	}
	// A failing step is an error in the stream; forcerm leaves no pod behind.
	writeContext(t, ctxFile, map[string]string{"Dockerfile": "FROM " + base + "\nRUN echo failing; exit 3\n"})
	msgs = regStream(t, d, "/image/build?forcerm=1", "@"+ctxFile)
	if last := msgs[len(msgs)-1]; !strings.Contains(last.Error, "returned a non-zero code: 3") || !strings.Contains(streamText(msgs), "failing\n") {
		t.Errorf("failing build:\n%s", dump(msgs))
	}
	d.expect("GET", "/list?item=pod", "", 201, `"podData":[]`)

	// --- interop: hyperd's push read by skopeo, skopeo's push pulled by hyperd
	regStream(t, d, "/image/push?remote="+url.QueryEscape(reg+"/e2e/built")+"&tag=1", "")
	var cfg struct {
		Config struct{ Env, Cmd []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(regtest.Run(t, skopeo, "inspect", "--config", "--tls-verify=false", "docker://"+built)), &cfg); err != nil {
		t.Fatal(err)
	}
	// busybox, the commit, RUN, COPY, WORKDIR (created), RUN; ENV and CMD add no layer.
	if !contains(cfg.Config.Env, "WHO=hyperd") || len(cfg.Config.Cmd) != 3 || len(cfg.RootFS.DiffIDs) != 6 {
		t.Errorf("skopeo inspect of hyperd's push: %+v", cfg)
	}
	if cd := configDigest(t, skopeo, "docker://"+built); cd != id {
		t.Errorf("the pushed config is %s, hyperd's image id %s", cd, id)
	}
	// skopeo's OCI copy rewrites the config as an OCI one: same layers and settings.
	oci := filepath.Join(tmp, "oci")
	regtest.Run(t, skopeo, "copy", "-q", "--src-tls-verify=false", "docker://"+built, "oci:"+oci+":built")
	ociCfg := cfg
	ociCfg.Config.Env, ociCfg.RootFS.DiffIDs = nil, nil
	if err := json.Unmarshal([]byte(regtest.Run(t, skopeo, "inspect", "--config", "oci:"+oci+":built")), &ociCfg); err != nil {
		t.Fatal(err)
	}
	if !contains(ociCfg.Config.Env, "WHO=hyperd") || strings.Join(ociCfg.RootFS.DiffIDs, ",") != strings.Join(cfg.RootFS.DiffIDs, ",") {
		t.Errorf("skopeo's OCI copy: %+v, want the layers %v", ociCfg, cfg.RootFS.DiffIDs)
	}
	archive := filepath.Join(tmp, "bb.tar")
	var arch bytes.Buffer
	if err := imgtest.Write(&arch, bb, "skopeo/bb:s1"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(archive, arch.Bytes(), 0o644)
	theirs := reg + "/skopeo/bb:s1"
	regtest.Run(t, skopeo, "copy", "-q", "--dest-tls-verify=false", "docker-archive:"+archive, "docker://"+theirs)
	msgs = regStream(t, d, "/image/create?imageName="+url.QueryEscape(theirs), "")
	// skopeo may reuse the registry's copy of the busybox layer (its blob info
	// cache) or upload its own compression of it: one layer either way.
	checkPull(t, msgs, theirs, 1, -1)
	if want := configDigest(t, skopeo, "docker://"+theirs); !strings.Contains(d.expect("GET", "/images/get", "", 200, reg+"/skopeo/bb:s1:"), ":"+strings.TrimPrefix(want, "sha256:")+":") {
		t.Errorf("hyperd's id for skopeo's image is not the config skopeo pushed (%s)", want)
	}
	if out := run(theirs, "echo", "pushed by skopeo"); out != "pushed by skopeo\n" {
		t.Errorf("run skopeo's image: %q", out)
	}

	// --- htpasswd registries: POST /auth stores accepted credentials only
	privA := regA + "/private/bb:1"
	load(privA)
	pushA := "/image/push?remote=" + url.QueryEscape(regA+"/private/bb") + "&tag=1"
	if msgs := regStream(t, d, pushA, ""); !strings.Contains(msgs[len(msgs)-1].Error, "authentication required") {
		t.Fatalf("push without credentials:\n%s", dump(msgs))
	}
	d.expect("POST", "/auth", `{"username":"alice","password":"wrong","serveraddress":"`+regA+`"}`, 401, "unauthorized")
	if msgs := regStream(t, d, pushA, ""); msgs[len(msgs)-1].Error == "" {
		t.Fatalf("rejected credentials were used:\n%s", dump(msgs))
	}
	d.expect("POST", "/auth", `{"username":"alice","password":"s3cret","email":"alice@example.com","serveraddress":"http://`+regA+`/v2/"}`, 200, `{"Status":"Login Succeeded"}`)
	if msgs := regStream(t, d, pushA, ""); msgs[len(msgs)-1].Error != "" {
		t.Fatalf("push with stored credentials:\n%s", dump(msgs))
	}
	rmi(t, d, privA)
	checkPull(t, regStream(t, d, "/image/create?imageName="+url.QueryEscape(privA), ""), privA, 0, 1)
	// They are in the daemon's state: a restarted hyperd still uses them.
	d.signal(syscall.SIGTERM)
	d = startDaemon(t, bin, root, sock, driver, driverFlags(t, driver)...)
	rmi(t, d, privA)
	checkPull(t, regStream(t, d, "/image/create?imageName="+url.QueryEscape(privA), ""), privA, 0, 1)
	if out := run(privA, "echo", "private"); out != "private\n" {
		t.Errorf("run the private image: %q", out)
	}

	// --- hyperctl login does the same (through POST /auth)
	privB := regB + "/private/bb:2"
	load(privB)
	if out, err := hctl("login", "-u", "bob", "-p", "wrong", regB); err == nil || !strings.Contains(out, "unauthorized") {
		t.Errorf("hyperctl login with a wrong password: %v %q", err, out)
	}
	if out, err := hctl("login", "-u", "bob", "-p", "hunter2", regB); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("hyperctl login: %v %q", err, out)
	}
	// curl sends no X-Registry-Auth: the daemon's stored credentials do it.
	if msgs := regStream(t, d, "/image/push?remote="+url.QueryEscape(regB+"/private/bb")+"&tag=2", ""); msgs[len(msgs)-1].Error != "" {
		t.Fatalf("push after hyperctl login:\n%s", dump(msgs))
	}
	rmi(t, d, privB)
	if out, err := hctl("pull", privB); err != nil || !strings.Contains(out, "Status: Downloaded newer image for "+privB) {
		t.Errorf("hyperctl pull: %v %q", err, out)
	}
	// The stored credentials reach registry A: a missing tag is "not found",
	// not an authentication failure.
	if msgs := regStream(t, d, "/image/create?imageName="+url.QueryEscape(regA+"/private/bb:2"), ""); !strings.Contains(msgs[len(msgs)-1].Error, "not found") {
		t.Errorf("pull of a missing tag from registry A:\n%s", dump(msgs))
	}
}

// regStream POSTs path (body "@file" sends a file) and returns the NDJSON
// stream's messages; every line must be one JSON message.
func regStream(t *testing.T, d *daemon, path, body string) []api.JSONMessage {
	t.Helper()
	t0 := time.Now()
	code, b := d.curl("POST", path, body)
	// the time each pull, push and build takes (in L1 a build's RUN
	// steps boot pod VMs under TCG): where a slow run spent it
	t.Logf("POST %s: %d in %v", path, code, time.Since(t0).Round(100*time.Millisecond))
	if code != 200 {
		t.Fatalf("POST %s = %d %s\nhyperd log:\n%s", path, code, trunc(b), d.log())
	}
	var msgs []api.JSONMessage
	for _, l := range strings.Split(strings.TrimSuffix(b, "\n"), "\n") {
		var m api.JSONMessage
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("POST %s: line %q is not one JSON message: %v", path, l, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// checkPull checks a pull's progress messages: Docker's sequence, per layer,
// with byte counts for downloads, and no error. With existing < 0, layers is
// the total of downloaded and existing layers.
func checkPull(t *testing.T, msgs []api.JSONMessage, ref string, downloaded, existing int) {
	if existing < 0 {
		n := 0
		for _, m := range msgs {
			if m.Status == "Already exists" {
				n++
			}
		}
		downloaded, existing = downloaded-n, n
	}
	t.Helper()
	if msgs[0].Status != "Pulling "+ref {
		t.Errorf("first message %+v", msgs[0])
	}
	repo, tag := ref[:strings.LastIndexByte(ref, ':')], ref[strings.LastIndexByte(ref, ':')+1:]
	if msgs[1].Status != "Pulling from "+repo || msgs[1].ID != tag {
		t.Errorf("second message %+v", msgs[1])
	}
	count := map[string]int{}
	sawBytes := false
	for _, m := range msgs {
		if m.Error != "" {
			t.Fatalf("pull of %s failed: %s", ref, m.Error)
		}
		count[m.Status]++
		if m.Status == "Downloading" {
			if m.ID == "" || m.ProgressDetail == nil || m.ProgressDetail.Total <= 0 || m.ProgressDetail.Current <= 0 || !strings.Contains(m.Progress, "]") {
				t.Errorf("download progress %+v", m)
			}
			sawBytes = true
		}
	}
	last := msgs[len(msgs)-1].Status
	if count["Pulling fs layer"] != downloaded+existing || count["Pull complete"] != downloaded || count["Already exists"] != existing ||
		(downloaded > 0 && !sawBytes) || !hasPrefix(msgs, "Digest: sha256:") || last != "Status: Downloaded newer image for "+ref {
		t.Errorf("pull of %s (want %d downloaded, %d existing layers):\n%s", ref, downloaded, existing, dump(msgs))
	}
}

func rmi(t *testing.T, d *daemon, ref string) {
	t.Helper()
	d.expect("DELETE", "/image?imageId="+url.QueryEscape(ref), "", 200, `"untaged":"`+ref+`"`)
	if _, b := d.curl("GET", "/images/get", ""); strings.Contains(b, `"`+ref+":") {
		t.Fatalf("%s still listed after rmi: %s", ref, b)
	}
}

func hasStatus(msgs []api.JSONMessage, s string) bool {
	for _, m := range msgs {
		if m.Status == s {
			return true
		}
	}
	return false
}

func hasPrefix(msgs []api.JSONMessage, p string) bool {
	for _, m := range msgs {
		if strings.HasPrefix(m.Status, p) {
			return true
		}
	}
	return false
}

func streamText(msgs []api.JSONMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Stream)
	}
	return b.String()
}

func auxID(t *testing.T, msgs []api.JSONMessage) string {
	t.Helper()
	var r api.BuildResult
	last := msgs[len(msgs)-1]
	if err := json.Unmarshal(last.Aux, &r); err != nil || !strings.HasPrefix(r.ID, "sha256:") {
		t.Fatalf("build did not end with the image id:\n%s", dump(msgs))
	}
	return r.ID
}

func dump(msgs []api.JSONMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return trunc(b.String())
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

// configDigest asks skopeo for the config digest of an image's manifest.
func configDigest(t *testing.T, skopeo, ref string) string {
	t.Helper()
	args := []string{"inspect", "--raw"}
	if strings.HasPrefix(ref, "docker://") {
		args = append(args, "--tls-verify=false")
	}
	var m struct{ Config struct{ Digest string } }
	raw := regtest.Run(t, skopeo, append(args, ref)...)
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.Config.Digest == "" {
		t.Fatalf("skopeo inspect --raw %s: %v\n%s", ref, err, raw)
	}
	return m.Config.Digest
}

// writeContext writes a tar build context.
func writeContext(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(fmt.Errorf("context: %w", err))
	}
}
