// This file owns TLS for --host tcp:// (Docker's and the original hyperd's
// flags: --tlscert and --tlskey serve TLS; --tlsverify with --tlscacert
// also requires a client certificate signed by that CA) and the warning
// for a tcp:// API served without it.

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSOptions are the API's TLS settings.
type TLSOptions struct {
	CACert string `json:"tlscacert"`
	Cert   string `json:"tlscert"`
	Key    string `json:"tlskey"`
	Verify bool   `json:"tlsverify"`
}

func (t TLSOptions) enabled() bool { return t.Cert != "" || t.Key != "" || t.Verify || t.CACert != "" }

// check validates the combination for host.
func (t TLSOptions) check(host string) error {
	if !t.enabled() {
		return nil
	}
	if !strings.HasPrefix(host, "tcp://") {
		return fmt.Errorf("--tlscert/--tlskey/--tlscacert/--tlsverify apply to --host tcp:// only (the unix socket is guarded by its mode, 0660 root)")
	}
	if t.Cert == "" || t.Key == "" {
		return errors.New("TLS needs both --tlscert and --tlskey")
	}
	if t.Verify && t.CACert == "" {
		return errors.New("--tlsverify needs --tlscacert (the CA that signs client certificates)")
	}
	if t.CACert != "" && !t.Verify {
		return errors.New("--tlscacert without --tlsverify would accept any client: add --tlsverify")
	}
	return nil
}

// serverConfig loads the certificates; nil when TLS is off.
func (t TLSOptions) serverConfig() (*tls.Config, error) {
	if !t.enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("--tlscert/--tlskey: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.Verify {
		pem, err := os.ReadFile(t.CACert)
		if err != nil {
			return nil, fmt.Errorf("--tlscacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tlscacert %s: no PEM certificate in it", t.CACert)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// exposure is the warning for how the API is served, or "".
func (t TLSOptions) exposure(host string) string {
	if !strings.HasPrefix(host, "tcp://") {
		return ""
	}
	switch {
	case !t.enabled():
		return "the API is served on " + host + " WITHOUT TLS or authentication: anyone who can reach that address controls hyperd, which is root on this host (use --tlsverify with --tlscacert, --tlscert, --tlskey)"
	case !t.Verify:
		return "the API is served on " + host + " with TLS but WITHOUT client certificates (--tlsverify): anyone who can reach it controls hyperd, which is root on this host"
	}
	return ""
}
