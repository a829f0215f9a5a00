package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api/client"
)

// pki writes a CA and certificates it signs into dir.
type pki struct {
	dir  string
	ca   *x509.Certificate
	caKy *ecdsa.PrivateKey
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, ca: ca, caKy: k}
	writePEM(t, filepath.Join(dir, name+"-ca.pem"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes name.pem and name-key.pem.
func (p *pki) issue(t *testing.T, name string, server bool) (cert, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caKy)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, key, "EC PRIVATE KEY", kd)
	return cert, key
}

// TestAPIOverTCP: --host tcp:// with --tlsverify serves only clients with
// a certificate from --tlscacert (the Go client and hyperctl); one without
// a certificate, or with one from another CA, is refused at the
// handshake. Served without TLS, hyperd says loudly what that exposes.
func TestAPIOverTCP(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	ca := newPKI(t, dir, "good")
	other := newPKI(t, dir, "other")
	srvCert, srvKey := ca.issue(t, "server", true)
	cliCert, cliKey := ca.issue(t, "client", false)
	badCert, badKey := other.issue(t, "intruder", false)
	caFile := filepath.Join(dir, "good-ca.pem")

	start := func(name string, extra ...string) (string, string) {
		port := strconv.Itoa(freePort(t))
		logf := filepath.Join(dir, name+".log")
		lf, _ := os.Create(logf)
		args := append([]string{"--host", "tcp://127.0.0.1:" + port, "--data-root", filepath.Join(dir, name), "--driver", "local", "--network", "none",
			"--cri-socket", filepath.Join(dir, name+"-cri.sock")}, extra...) // two daemons at once: a CRI socket each
		cmd := exec.Command(filepath.Join(bin, "hyperd"), args...)
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lf.Close()
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		for i := 0; ; i++ {
			if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
				c.Close()
				break
			}
			if i > 200 {
				b, _ := os.ReadFile(logf)
				t.Fatalf("hyperd %s never listened:\n%s", name, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return "tcp://127.0.0.1:" + port, logf
	}
	host, _ := start("tls", "--tlsverify", "--tlscacert", caFile, "--tlscert", srvCert, "--tlskey", srvKey)
	ping := func(cfg *tls.Config) error {
		c, err := client.New(host)
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = cfg
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return c.Ping(ctx)
	}
	good, err := client.TLSConfig(caFile, cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(good); err != nil {
		t.Fatalf("client with a certificate from the CA: %v", err)
	}
	noCert, _ := client.TLSConfig(caFile, "", "")
	bad, _ := client.TLSConfig(caFile, badCert, badKey)
	for name, cfg := range map[string]*tls.Config{"no TLS": nil, "no client certificate": noCert, "a certificate from another CA": bad} {
		if err := ping(cfg); err == nil {
			t.Errorf("client with %s was served", name)
		}
	}
	out, err := exec.Command(filepath.Join(bin, "hyperctl"), "-H", host, "--tlsverify", "--tlscacert", caFile, "--tlscert", cliCert, "--tlskey", cliKey, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Server version") {
		t.Fatalf("hyperctl --tlsverify version: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(bin, "hyperctl"), "-H", host, "version").CombinedOutput(); err == nil {
		t.Fatalf("hyperctl without TLS was served:\n%s", out)
	}

	// plain tcp: served, with the warning in the log
	plain, logf := start("plain")
	c, _ := client.New(plain)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(logf); !strings.Contains(string(b), "WITHOUT TLS or authentication") {
		t.Fatalf("no warning for a plain tcp:// API:\n%s", b)
	}
}
