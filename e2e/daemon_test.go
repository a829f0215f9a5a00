// This file owns the e2e suites' daemon harness: starting hyperd,
// loading test images, talking to it with curl and the Go client, and
// the waits and small helpers the suites share.

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/internal/testbin"
)

type daemon struct {
	t      testing.TB
	bin    string
	sock   string
	root   string
	driver string
	cmd    *exec.Cmd
	logf   string
	c      *client.Client
}

// startDaemon starts hyperd; extra are more flags (e.g. --kernel).
func startDaemon(t testing.TB, bin, root, sock, driver string, extra ...string) *daemon {
	t.Helper()
	return startDaemonWith(t, (*exec.Cmd).Start, bin, root, sock, driver, extra...)
}

// startDaemonIn starts hyperd in the network namespace pinned at ns.
func startDaemonIn(t testing.TB, ns, bin, root, sock, driver string, extra ...string) *daemon {
	t.Helper()
	return startDaemonWith(t, func(c *exec.Cmd) error { return netns.Do(ns, c.Start) }, bin, root, sock, driver, extra...)
}

func startDaemonWith(t testing.TB, start func(*exec.Cmd) error, bin, root, sock, driver string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: bin, sock: sock, root: root, driver: driver, logf: filepath.Join(filepath.Dir(root), "hyperd.log")}
	lf, err := os.OpenFile(d.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--host", "unix://" + sock, "--data-root", root, "--driver", driver, "--log-level", "debug", "--stop-timeout", "2"}
	if !slices.Contains(extra, "--network") {
		// pod networks change the network namespace hyperd runs in (a
		// bridge, iptables rules): only tests that run hyperd in a
		// namespace of their own turn them on (network_test.go)
		args = append(args, "--network", "none")
	}
	if !slices.Contains(extra, "--cri-socket") && !slices.Contains(extra, "--cri=false") {
		// each daemon its own CRI socket: a second daemon refuses to
		// start on one another serves (the default /var/run/hyperd/cri.sock)
		args = append(args, "--cri-socket", filepath.Join(filepath.Dir(root), "cri.sock"))
	}
	args = append(args, extra...)
	d.cmd = exec.Command(filepath.Join(bin, "hyperd"), args...)
	d.cmd.Stdout, d.cmd.Stderr = lf, lf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := start(d.cmd); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	d.c, _ = client.New("unix://" + sock)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("hyperd --driver %s exited at startup (%v); log:\n%s", driver, err, d.log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.c.Ping(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hyperd did not answer /_ping in 20s: %v; log:\n%s", err, d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	go func() { <-exited }()
	return d
}

// loadBusybox loads busybox:latest, made from the host's busybox-static,
// into the daemon through POST /image/load.
func (d *daemon) loadBusybox() {
	d.t.Helper()
	d.loadImage("busybox:latest")
}

// loadImage loads busybox with extra files as repoTag.
func (d *daemon) loadImage(repoTag string, extra ...imgtest.File) {
	d.t.Helper()
	var tarBuf bytes.Buffer
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := imgtest.Write(&tarBuf, bb, repoTag, extra...); err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.c.Load(ctx, &tarBuf); err != nil {
		d.t.Fatalf("load %s: %v\n%s", repoTag, err, d.log())
	}
}

// loadUDPEcho loads "udpecho:latest": busybox with /bin/udpecho (busybox
// has no UDP server).
func (d *daemon) loadUDPEcho() {
	d.t.Helper()
	b, err := os.ReadFile(testbin.Build(d.t, "./e2e/udpecho"))
	if err != nil {
		d.t.Fatal(err)
	}
	d.loadImage("udpecho:latest", imgtest.File{Name: "bin/udpecho", Mode: 0o755, Data: b})
}

// udpAsk sends msg to 127.0.0.1:port from a new socket (a new UDP peer of
// the mapping) and returns the answer, waiting up to wait for it. The
// container's server must be listening already: one datagram, no resends.
func udpAsk(port int, msg string, wait time.Duration) (string, error) {
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("udp port %d: %w", port, err)
	}
	return string(buf[:n]), nil
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logf)
	return tail(b, 8000)
}

// logWithout is the daemon's whole log less the lines containing skip.
func (d *daemon) logWithout(skip string) string {
	b, _ := os.ReadFile(d.logf)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, skip) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (d *daemon) signal(sig syscall.Signal) {
	d.cmd.Process.Signal(sig)
	for i := 0; i < 200; i++ {
		if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// curl runs curl --unix-socket and returns status and body.
func (d *daemon) curl(method, path, body string, hdr ...string) (int, string) {
	d.t.Helper()
	args := []string{"-sS", "--unix-socket", d.sock, "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", strconv.Itoa(int(slow(60*time.Second) / time.Second))}
	for _, h := range hdr {
		args = append(args, "-H", h)
	}
	if body != "" {
		args = append(args, "--data-binary", body, "-H", "Content-Type: application/json")
	}
	args = append(args, "http://hyperd"+path)
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		d.t.Fatalf("curl %s %s: %v (%s)\n%s", method, path, err, out, d.postmortem())
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, _ := strconv.Atoi(s[i+1:])
	return code, s[:i]
}

// expect checks a curl answer.
func (d *daemon) expect(method, path, body string, code int, contains string) string {
	d.t.Helper()
	got, b := d.curl(method, path, body)
	if got != code || !strings.Contains(b, contains) {
		d.t.Fatalf("curl %s %s = %d %q; want %d containing %q\nhyperd log tail:\n%s", method, path, got, trunc(b), code, contains, d.log())
	}
	if code >= 400 {
		var er api.ErrorResponse
		if json.Unmarshal([]byte(b), &er) != nil || er.Message == "" {
			d.t.Fatalf("curl %s %s: error body is not JSON {message}: %q", method, path, b)
		}
	}
	return b
}

func trunc(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

func q(s string) string {
	return strings.NewReplacer("%", "%25", " ", "%20", "\"", "%22", "{", "%7B", "}", "%7D", "[", "%5B", "]", "%5D", ",", "%2C", ":", "%3A", "&", "%26", "/", "%2F", ">", "%3E", ";", "%3B").Replace(s)
}

// demux parses Docker frames.
func demux(t *testing.T, b []byte) (stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("truncated frame header: %q", b)
		}
		n := int(binary.BigEndian.Uint32(b[4:8]))
		if len(b) < 8+n || (b[0] != 1 && b[0] != 2) {
			t.Fatalf("bad frame: %q", b)
		}
		if b[0] == 1 {
			o.Write(b[8 : 8+n])
		} else {
			e.Write(b[8 : 8+n])
		}
		b = b[8+n:]
	}
	return o.String(), e.String()
}

func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root (make test runs as root): the local driver creates namespaces")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is missing: apt-get install -y curl")
	}
	if _, err := imgtest.BusyboxPath(); err != nil {
		t.Fatal(err)
	}
}

// ctxT is a context that ends after d (scaled by slow(), see there) or
// with the test.
func ctxT(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), slow(d))
	t.Cleanup(cancel)
	return c
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// waitLog waits until container's stdout has want.
func waitLog(t *testing.T, c *client.Client, container, want string) {
	t.Helper()
	deadline := time.Now().Add(slow(30 * time.Second))
	for {
		var so bytes.Buffer
		err := c.Logs(context.Background(), container, client.LogsOptions{Stdout: true}, false, &so, io.Discard)
		if err == nil && strings.Contains(so.String(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's log never had %q: %q %v", container, want, so.String(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitPhase(t *testing.T, d *daemon, podID, phase string) {
	t.Helper()
	var last string
	for i := 0; i < 400; i++ {
		pi, err := d.c.PodInfo(context.Background(), podID)
		if err == nil && pi.Status.Phase == phase {
			return
		}
		if err == nil {
			last = pi.Status.Phase + " " + pi.Status.Reason + " " + pi.Status.Message
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pod %s never reached %s (last: %s); log:\n%s", podID, phase, last, d.log())
}

// execCreate creates an exec of cmd (a JSON array) by curl and returns its id.
func execCreate(t *testing.T, d *daemon, ctr, cmd string) string {
	t.Helper()
	b := d.expect("POST", "/exec/create?container="+ctr+"&command="+url.QueryEscape(cmd), "", 201, `"exec-`)
	var id string
	json.Unmarshal([]byte(b), &id)
	return id
}

// upgradeWithBody sends a stream request as the docker CLI does (a JSON
// body with Content-Length, Connection: Upgrade), then stdin and a
// half-close, and returns the demultiplexed stdout.
func upgradeWithBody(t *testing.T, sock, path, body, stdin string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: hyperd\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, stdin)
	c.(*net.UnixConn).CloseWrite()
	out, _ := io.ReadAll(br)
	so, _ := demux(t, out)
	return so
}
