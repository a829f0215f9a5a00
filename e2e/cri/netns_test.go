package cri

// This file runs the CRI tests' processes in a network namespace of the
// test's own (the network rule: hyperd's pod network, a bridge and
// iptables rules, stays in it): a docker-registry there, pushes to it
// through a dialer in the namespace, and commands started in it.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/vishvananda/netlink"
)

// newNetns makes a namespace with loopback up, removed with the test.
func newNetns(t testing.TB) string {
	t.Helper()
	ns := filepath.Join(t.TempDir(), "netns")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(ns) })
	if err := netns.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// startIn starts cmd in the namespace ns ("" the test's own).
func startIn(ns string, cmd *exec.Cmd) error {
	if ns == "" {
		return cmd.Start()
	}
	return netns.Do(ns, cmd.Start)
}

// dialIn dials from inside ns.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// transportIn is an HTTP transport whose connections are made in ns.
func transportIn(ns string) http.RoundTripper {
	return &http.Transport{DialContext: dialIn(ns), DisableKeepAlives: true}
}

// startRegistryIn runs Debian's docker-registry on 127.0.0.1 of ns (as
// image/regtest does on the test's own loopback) and returns host:port.
func startRegistryIn(t testing.TB, ns string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("the CRI tests need docker-registry (apt-get install -y docker-registry): %v", err)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:5000" // the namespace is the test's own: the port is free
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := startIn(ns, cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	c := &http.Client{Transport: transportIn(ns), Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry exited at startup (%v):\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not answer in 15s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
