package main

import (
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// TestCommands runs the hyperctl binary against the real API handlers and
// daemon core over the in-memory podtest driver (e2e/ runs it against a
// real hyperd).
func TestCommands(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hyperctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := pod.New(pod.Config{DataRoot: t.TempDir(), Driver: podtest.NewDriver(), Images: &podtest.Images{Root: t.TempDir()}, Logger: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sock := filepath.Join(t.TempDir(), "h.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer((&api.Server{Pods: d, Log: log, Version: "t"}).Handler())
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	tests := []struct {
		args     []string
		stdin    string
		wantOut  string // substring ("" = don't care)
		wantCode int
	}{
		{[]string{"version"}, "", "Server version: t", 0},
		{[]string{"run", "--rm", "--name", "r1", "busybox", "echo", "hello", "world"}, "", "hello world\n", 0},
		{[]string{"run", "--name", "r2", "busybox", "exit", "5"}, "", "", 5},
		{[]string{"run", "-i", "--name", "r3", "busybox", "cat"}, "piped\n", "piped\n", 0},
		{[]string{"run", "-d", "--name", "bg", "--label", "a=b", "--publish", port + ":80", "sleeper", "sleep", "bg-up"}, "", "bg\n", 0},
		{[]string{"list"}, "", "bg       bg", 0},
		{[]string{"list", "vm"}, "", "bg       associated", 0},
		{[]string{"--json", "list", "container"}, "", `"cData"`, 0},
		{[]string{"ps"}, "", "CONTAINER ID", 0},
		{[]string{"info"}, "", "Sandbox driver: fake", 0},
		{[]string{"info", "bg"}, "", `"podID": "bg"`, 0},
		{[]string{"exec", "bg", "echo", "in", "exec"}, "", "in exec\n", 0},
		{[]string{"exec", "bg", "exit", "3"}, "", "", 3},
		{[]string{"exec", "-i", "bg", "cat"}, "stdin to exec\n", "stdin to exec\n", 0},
		{[]string{"logs", "bg"}, "", "bg-up\n", 0},
		{[]string{"labels", "bg"}, "", "a     b", 0},
		{[]string{"labels", "bg", "a=c"}, "", "override", 1},
		{[]string{"labels", "--override", "bg", "a=c"}, "", "", 0},
		{[]string{"ports", "bg"}, "", port, 0},
		{[]string{"ports", "bg", "rm", port + ":80"}, "", "", 0},
		{[]string{"ports", "bg", "add", port + ":81/udp"}, "", "", 0},
		{[]string{"--json", "ports", "bg"}, "", `"protocol": "udp"`, 0},
		{[]string{"rename", "bg-sleeper-0", "main"}, "", "", 0},
		{[]string{"commit", "main", "snap:v1"}, "", "sha256:", 0},
		{[]string{"kill", "-s", "TERM", "bg"}, "", "", 0},
		{[]string{"rm", "bg", "r2", "r3"}, "", "bg\nr2\nr3\n", 0},
		{[]string{"info", "nope"}, "", "nope not found (HTTP 404)", 1},
		{[]string{"images"}, "", "no image store", 1},
		{[]string{"frob"}, "", "unknown command", 2},
	}
	for _, tc := range tests {
		cmd := exec.Command(bin, append([]string{"-H", "unix://" + sock}, tc.args...)...)
		cmd.Stdin = strings.NewReader(tc.stdin)
		out, _ := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		if code != tc.wantCode || !strings.Contains(string(out), tc.wantOut) {
			t.Errorf("hyperctl %s: exit %d %q; want exit %d containing %q", strings.Join(tc.args, " "), code, out, tc.wantCode, tc.wantOut)
		}
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
}
