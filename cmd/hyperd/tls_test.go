package main

import (
	"strings"
	"testing"
)

// TestTLSOptionsCheck: the flag combinations hyperd refuses, and the
// warning it gives for each way a tcp:// API can be served.
func TestTLSOptionsCheck(t *testing.T) {
	full := TLSOptions{CACert: "ca.pem", Cert: "c.pem", Key: "k.pem", Verify: true}
	for _, tc := range []struct {
		name    string
		host    string
		o       TLSOptions
		err     string // "" = accepted
		warning string // in exposure(), "" = none
	}{
		{"unix, no tls", "unix:///s", TLSOptions{}, "", ""},
		{"unix with tls flags", "unix:///s", full, "tcp:// only", ""},
		{"plain tcp", "tcp://0.0.0.0:1", TLSOptions{}, "", "WITHOUT TLS"},
		{"tls, no client certs", "tcp://0.0.0.0:1", TLSOptions{Cert: "c", Key: "k"}, "", "WITHOUT client certificates"},
		{"tlsverify", "tcp://0.0.0.0:1", full, "", ""},
		{"cert without key", "tcp://0.0.0.0:1", TLSOptions{Cert: "c"}, "both --tlscert and --tlskey", ""},
		{"verify without ca", "tcp://0.0.0.0:1", TLSOptions{Cert: "c", Key: "k", Verify: true}, "needs --tlscacert", ""},
		{"ca without verify", "tcp://0.0.0.0:1", TLSOptions{CACert: "ca", Cert: "c", Key: "k"}, "add --tlsverify", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.check(tc.host)
			if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("check: %v, want %q", err, tc.err)
			}
			if err != nil {
				return
			}
			if w := tc.o.exposure(tc.host); (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
				t.Fatalf("exposure: %q, want %q", w, tc.warning)
			}
		})
	}
}
