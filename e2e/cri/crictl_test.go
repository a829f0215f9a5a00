package cri

// TestCrictlWalkthrough runs the README's crictl walk-through against a
// real hyperd (--driver local): pull through a mirror, runp, create,
// start, exec -s, exec (streamed), logs, a host port mapping, port-forward,
// hyperctl's view of the container, stop, stopp, rmp.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/image/regtest"
)

func crictlPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(critestPath(t)), "crictl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("crictl %s is missing (%v): scripts/setup.sh installs it (scripts/install-cri-tools.sh)", CritestVersion, err)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestCrictlWalkthrough(t *testing.T) {
	requireRoot(t)
	crictl := crictlPath(t)
	reg := regtest.Start(t, "", "")
	pushImages(t, reg, nil)
	h := startHyperd(t, "local", "--registry-mirror", "registry.k8s.io=http://"+reg+"/registry.k8s.io")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "crictl.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", h.criSock, h.criSock)), 0o644)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(crictl, append([]string{"--config", cfg}, args...)...).Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = string(ee.Stderr)
			}
			t.Fatalf("crictl %v: %v\n%s\nhyperd log:\n%s", args, err, msg, h.log())
		}
		return strings.TrimSpace(string(out))
	}
	hostPort := freePort(t)
	logDir := filepath.Join(dir, "logs")
	podJSON := filepath.Join(dir, "pod.json")
	ctrJSON := filepath.Join(dir, "ctr.json")
	os.WriteFile(podJSON, []byte(fmt.Sprintf(`{"metadata": {"name": "demo", "namespace": "default", "uid": "u1"}, "hostname": "demo",
 "log_directory": %q, "port_mappings": [{"container_port": 80, "host_port": %d}]}`, logDir, hostPort)), 0o644)
	os.WriteFile(ctrJSON, []byte(`{"metadata": {"name": "web"}, "image": {"image": "`+busyboxImage+`"}, "log_path": "web.log",
 "command": ["sh", "-c", "echo serving; exec httpd -f -p 80 -h /www"]}`), 0o644)

	run("pull", busyboxImage)
	pod := run("runp", podJSON)
	ctr := run("create", "--no-pull", pod, ctrJSON, podJSON)
	run("start", ctr)
	if out := run("exec", "-s", ctr, "hostname"); out != "demo" {
		t.Errorf("crictl exec -s hostname = %q", out)
	}
	if out := run("exec", ctr, "sh", "-c", "echo streamed"); out != "streamed" {
		t.Errorf("crictl exec (streamed) = %q", out)
	}
	cmd := exec.Command(crictl, "--config", cfg, "exec", "-i", ctr, "cat")
	cmd.Stdin = strings.NewReader("through stdin\n")
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "through stdin" {
		t.Errorf("crictl exec -i cat = %q, %v", out, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(run("logs", ctr), "serving") {
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs: no 'serving'")
		}
		time.Sleep(200 * time.Millisecond)
	}
	get := func(port int) string {
		t.Helper()
		var last error
		for i := 0; i < 50; i++ {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return string(b)
			}
			last = err
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("GET 127.0.0.1:%d: %v", port, last)
		return ""
	}
	if body := get(hostPort); !strings.Contains(body, "hello from the busybox image") {
		t.Errorf("the host port mapping answered %q", body)
	}
	pfPort := freePort(t)
	pf := exec.Command(crictl, "--config", cfg, "port-forward", pod, fmt.Sprintf("%d:80", pfPort))
	pfOut, _ := pf.StdoutPipe()
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	if line, err := bufio.NewReader(pfOut).ReadString('\n'); err != nil || !strings.Contains(line, "Forwarding from") {
		t.Fatalf("crictl port-forward: %q %v", line, err)
	}
	go io.Copy(io.Discard, pfOut)
	if body := get(pfPort); !strings.Contains(body, "hello from the busybox image") {
		t.Errorf("port-forward answered %q", body)
	}
	out, err := exec.Command(filepath.Join(h.bin, "hyperctl"), "-H", "unix://"+h.sock, "list", "container").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "k8s_web_demo_default_u1_0") {
		t.Errorf("hyperctl list container: %v\n%s", err, out)
	}
	run("stop", ctr)
	run("stopp", pod)
	run("rmp", pod)
	if out := run("pods", "-q"); out != "" {
		t.Errorf("pods left: %q", out)
	}
}
