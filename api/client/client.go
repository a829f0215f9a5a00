// Package client is the Go client of the hyperd REST API, used by hyperctl
// and the end-to-end tests.
//
// client.go owns the Client, its transport (Do, call) and
// errors, and the daemon's own calls (Ping, Version, Info); pods.go,
// containers.go, streams.go and images.go hold the calls of each resource.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/api"
)

// DefaultHost is hyperd's default socket.
const DefaultHost = "unix:///var/run/hyper.sock"

// Client talks to one hyperd.
type Client struct {
	network, addr string
	http          *http.Client
	// TLS, when set, wraps every connection to a tcp:// host (hyperd
	// --tlscert/--tlskey, with a client certificate for --tlsverify).
	TLS *tls.Config
	// Prefix is prepended to every path, e.g. "/v1.1.0" (default none).
	Prefix string
}

// Error is a non-2xx answer.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// StatusOf returns the HTTP status of an *Error, else 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// New parses host: unix:///path, /path, or tcp://host:port.
func New(host string) (*Client, error) {
	if host == "" {
		host = DefaultHost
	}
	c := &Client{}
	switch {
	case strings.HasPrefix(host, "unix://"):
		c.network, c.addr = "unix", strings.TrimPrefix(host, "unix://")
	case strings.HasPrefix(host, "/"):
		c.network, c.addr = "unix", host
	case strings.HasPrefix(host, "tcp://"):
		c.network, c.addr = "tcp", strings.TrimPrefix(host, "tcp://")
	default:
		return nil, fmt.Errorf("host %q: want unix:///path or tcp://host:port", host)
	}
	tr := &http.Transport{
		DialContext:  func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second,
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// dial opens a connection to the daemon, with TLS when c.TLS is set.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.addr)
	if err != nil || c.TLS == nil || c.network != "tcp" {
		return conn, err
	}
	cfg := c.TLS.Clone()
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(c.addr); err == nil {
			cfg.ServerName = h
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}

// TLSConfig builds a client TLS configuration from PEM files: caFile
// verifies the daemon (else the system roots); certFile and keyFile are
// the client certificate a --tlsverify daemon asks for.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (c *Client) url(path string, q url.Values) string {
	u := "http://hyperd" + c.Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// Do sends a request and returns the response for 2xx, else an *Error.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach hyperd at %s://%s: %w", c.network, c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, errorOf(resp)
	}
	return resp, nil
}

// errorOf reads a failed answer's {"message": ...} (or its text) as an *Error.
func errorOf(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var er api.ErrorResponse
	if json.Unmarshal(b, &er) != nil || er.Message == "" {
		er.Message = strings.TrimSpace(string(b))
	}
	return &Error{Status: resp.StatusCode, Message: er.Message}
}

func (c *Client) call(ctx context.Context, method, path string, q url.Values, body io.Reader, out any) error {
	var hdr http.Header
	if body != nil {
		hdr = http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := c.Do(ctx, method, path, q, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding %s answer: %w", path, err)
	}
	return nil
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// Ping checks the daemon.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "GET", "/_ping", nil, nil, nil)
}

// Version of the daemon.
func (c *Client) Version(ctx context.Context) (*api.VersionInfo, error) {
	var v api.VersionInfo
	return &v, c.call(ctx, "GET", "/version", nil, nil, &v)
}

// Info is /info.
func (c *Client) Info(ctx context.Context) (*api.Info, error) {
	var v api.Info
	return &v, c.call(ctx, "GET", "/info", nil, nil, &v)
}
