// Package client is the Go client of the hyperd REST API, used by hyperctl
// and the end-to-end tests.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
)

// DefaultHost is hyperd's default socket.
const DefaultHost = "unix:///var/run/hyper.sock"

// Client talks to one hyperd.
type Client struct {
	network, addr string
	http          *http.Client
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
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, c.network, c.addr)
		},
		MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second,
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
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
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var er api.ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Message == "" {
			er.Message = strings.TrimSpace(string(b))
		}
		return nil, &Error{Status: resp.StatusCode, Message: er.Message}
	}
	return resp, nil
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

// CreatePod posts a pod spec (JSON) as the body; returns the pod id.
func (c *Client) CreatePod(ctx context.Context, spec []byte) (string, error) {
	var r api.PodResult
	err := c.call(ctx, "POST", "/pod/create", nil, bytes.NewReader(spec), &r)
	return r.ID, err
}

func pq(id string) url.Values { return url.Values{"podId": {id}} }

// StartPod starts a pod.
func (c *Client) StartPod(ctx context.Context, id string) error {
	return c.call(ctx, "POST", "/pod/start", pq(id), nil, nil)
}

// StopPod stops a pod and its VM.
func (c *Client) StopPod(ctx context.Context, id string) error {
	q := pq(id)
	q.Set("stopVM", "yes")
	return c.call(ctx, "POST", "/pod/stop", q, nil, nil)
}

// StopPodKeepVM stops a pod's containers and keeps its VM for the next
// start (stopVM=no).
func (c *Client) StopPodKeepVM(ctx context.Context, id string) error {
	q := pq(id)
	q.Set("stopVM", "no")
	return c.call(ctx, "POST", "/pod/stop", q, nil, nil)
}

// RemovePod deletes a pod.
func (c *Client) RemovePod(ctx context.Context, id string) error {
	return c.call(ctx, "DELETE", "/pod", pq(id), nil, nil)
}

// List is GET /list?item=pod|container|vm.
func (c *Client) List(ctx context.Context, item, podFilter string) (*api.ListResult, error) {
	q := url.Values{"item": {item}}
	if podFilter != "" {
		q.Set("pod", podFilter)
	}
	var r api.ListResult
	return &r, c.call(ctx, "GET", "/list", q, nil, &r)
}

// PodInfo is GET /pod/info.
func (c *Client) PodInfo(ctx context.Context, id string) (*pod.PodInfo, error) {
	var r pod.PodInfo
	return &r, c.call(ctx, "GET", "/pod/info", pq(id), nil, &r)
}

// PodStats is GET /pod/stats.
func (c *Client) PodStats(ctx context.Context, id string) (*pod.PodStats, error) {
	var r pod.PodStats
	return &r, c.call(ctx, "GET", "/pod/stats", pq(id), nil, &r)
}

// SetLabels is POST /pod/labels.
func (c *Client) SetLabels(ctx context.Context, id string, labels map[string]string, override bool) error {
	b, _ := json.Marshal(labels)
	q := pq(id)
	q.Set("labels", string(b))
	q.Set("override", strconv.FormatBool(override))
	return c.call(ctx, "POST", "/pod/labels", q, nil, nil)
}

// KillPod signals a pod's containers (container "" = all).
func (c *Client) KillPod(ctx context.Context, id, container string, sig int) error {
	q := url.Values{"podName": {id}, "signal": {strconv.Itoa(sig)}}
	if container != "" {
		q.Set("container", container)
	}
	return c.call(ctx, "POST", "/pod/kill", q, nil, nil)
}

// PortMappings lists a pod's port mappings.
func (c *Client) PortMappings(ctx context.Context, id string) ([]api.PortMapping, error) {
	var r api.PortMappingList
	err := c.call(ctx, "GET", "/pod/"+url.PathEscape(id)+"/portmappings", nil, nil, &r)
	return r.PortMappings, err
}

// UpdatePortMappings adds or deletes rules (action "add" or "delete").
func (c *Client) UpdatePortMappings(ctx context.Context, id, action string, pms []api.PortMapping) error {
	return c.call(ctx, "PUT", "/pod/"+url.PathEscape(id)+"/portmappings/"+action, nil, jsonBody(pms), nil)
}

// CreateContainer adds a container (spec JSON) to a pod.
func (c *Client) CreateContainer(ctx context.Context, podID string, spec []byte) (string, error) {
	var r struct{ ID string }
	err := c.call(ctx, "POST", "/container/create", pq(podID), bytes.NewReader(spec), &r)
	return r.ID, err
}

func cq(id string) url.Values { return url.Values{"container": {id}} }

// StartContainer, StopContainer, RemoveContainer.
func (c *Client) StartContainer(ctx context.Context, id string) error {
	return c.call(ctx, "POST", "/container/start", cq(id), nil, nil)
}

func (c *Client) StopContainer(ctx context.Context, id string) error {
	return c.call(ctx, "POST", "/container/stop", cq(id), nil, nil)
}

func (c *Client) RemoveContainer(ctx context.Context, id string) error {
	return c.call(ctx, "POST", "/container/remove", cq(id), nil, nil)
}

// KillContainer signals a container.
func (c *Client) KillContainer(ctx context.Context, id string, sig int) error {
	q := cq(id)
	q.Set("signal", strconv.Itoa(sig))
	return c.call(ctx, "POST", "/container/kill", q, nil, nil)
}

// RenameContainer renames a container.
func (c *Client) RenameContainer(ctx context.Context, oldName, newName string) error {
	return c.call(ctx, "POST", "/container/rename", url.Values{"oldName": {oldName}, "newName": {newName}}, nil, nil)
}

// ContainerInfo is GET /container/info.
func (c *Client) ContainerInfo(ctx context.Context, id string) (*pod.ContainerInfo, error) {
	var r pod.ContainerInfo
	return &r, c.call(ctx, "GET", "/container/info", cq(id), nil, &r)
}

// ExitCode blocks until the container (exec "" ) or exec exits.
func (c *Client) ExitCode(ctx context.Context, container, exec string) (int, error) {
	q := cq(container)
	if exec != "" {
		q.Set("exec", exec)
	}
	var code int
	return code, c.call(ctx, "GET", "/exitcode", q, nil, &code)
}

// Commit creates an image from a container; returns the image id.
func (c *Client) Commit(ctx context.Context, container, repo, tag, author, comment string, config any) (string, error) {
	q := cq(container)
	for k, v := range map[string]string{"repo": repo, "tag": tag, "author": author, "comment": comment} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var body io.Reader
	if config != nil {
		body = jsonBody(config)
	}
	var r api.PodResult
	err := c.call(ctx, "POST", "/container/commit", q, body, &r)
	return r.ID, err
}

// LogsOptions select output.
type LogsOptions struct {
	Stdout, Stderr, Follow, Timestamps bool
	Tail                               string
}

// Logs copies a container's logs; tty says whether the stream is raw.
func (c *Client) Logs(ctx context.Context, id string, opt LogsOptions, tty bool, stdout, stderr io.Writer) error {
	q := cq(id)
	q.Set("stdout", strconv.FormatBool(opt.Stdout))
	q.Set("stderr", strconv.FormatBool(opt.Stderr))
	q.Set("follow", strconv.FormatBool(opt.Follow))
	q.Set("timestamps", strconv.FormatBool(opt.Timestamps))
	if opt.Tail != "" {
		q.Set("tail", opt.Tail)
	}
	resp, err := c.Do(ctx, "GET", "/container/logs", q, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if tty {
		_, err = io.Copy(stdout, resp.Body)
		return err
	}
	return Demux(resp.Body, stdout, stderr)
}

// Demux splits Docker's 8-byte-framed stream.
func Demux(r io.Reader, stdout, stderr io.Writer) error {
	var h [8]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			return err
		}
		n := int64(binary.BigEndian.Uint32(h[4:]))
		w := stdout
		if h[0] == 2 {
			w = stderr
		}
		if w == nil {
			w = io.Discard
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			return err
		}
	}
}

// Resize changes a tty's size.
func (c *Client) Resize(ctx context.Context, container, exec string, w, h int) error {
	q := cq(container)
	if exec != "" {
		q.Set("exec", exec)
	}
	q.Set("w", strconv.Itoa(w))
	q.Set("h", strconv.Itoa(h))
	return c.call(ctx, "POST", "/tty/resize", q, nil, nil)
}

// ExecCreate creates an exec; returns its id.
func (c *Client) ExecCreate(ctx context.Context, container string, cmd []string, tty bool) (string, error) {
	b, _ := json.Marshal(cmd)
	q := cq(container)
	q.Set("command", string(b))
	q.Set("tty", strconv.FormatBool(tty))
	var id string
	return id, c.call(ctx, "POST", "/exec/create", q, nil, &id)
}

// Stream is a hijacked attach or exec connection.
type Stream struct {
	Conn   net.Conn
	Reader *bufio.Reader
	Status int
}

// Hijack posts path and upgrades the connection (101 UPGRADED).
func (c *Client) Hijack(ctx context.Context, path string, q url.Values) (*Stream, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach hyperd at %s://%s: %w", c.network, c.addr, err)
	}
	req, _ := http.NewRequest("POST", c.url(path, q), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	req.Header.Set("Content-Type", "text/plain")
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	resp, err := http.ReadResponse(br, req)
	stop()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != 101 && resp.StatusCode != 200 {
		defer conn.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var er api.ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Message == "" {
			er.Message = strings.TrimSpace(string(b))
		}
		return nil, &Error{Status: resp.StatusCode, Message: er.Message}
	}
	return &Stream{Conn: conn, Reader: br, Status: resp.StatusCode}, nil
}

// Pump copies stdin to the stream (half-closing at EOF) and the output to
// stdout/stderr (demuxed unless tty) until the daemon closes the stream.
func (s *Stream) Pump(tty bool, stdin io.Reader, stdout, stderr io.Writer) error {
	defer s.Conn.Close()
	if stdin != nil {
		go func() {
			io.Copy(s.Conn, stdin)
			if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}()
	} else if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if tty {
		_, err := io.Copy(stdout, s.Reader)
		if err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	return Demux(s.Reader, stdout, stderr)
}

// Attach opens a container's stdio stream.
func (c *Client) Attach(ctx context.Context, container string, stdin bool) (*Stream, error) {
	q := url.Values{"type": {"container"}, "value": {container}, "container": {container}, "stdin": {strconv.FormatBool(stdin)}}
	return c.Hijack(ctx, "/attach", q)
}

// ExecStart starts an exec and opens its stream.
func (c *Client) ExecStart(ctx context.Context, container, exec string) (*Stream, error) {
	return c.Hijack(ctx, "/exec/start", url.Values{"container": {container}, "exec": {exec}})
}

// Images lists images as the original's colon-joined strings.
func (c *Client) Images(ctx context.Context, all bool) ([]string, error) {
	q := url.Values{}
	if all {
		q.Set("all", "yes")
	}
	var r api.ImagesList
	err := c.call(ctx, "GET", "/images/get", q, nil, &r)
	return r.ImagesList, err
}

func authHeader(a *api.AuthConfig) http.Header {
	if a == nil {
		return nil
	}
	b, _ := json.Marshal(a)
	return http.Header{"X-Registry-Auth": {base64.URLEncoding.EncodeToString(b)}}
}

// readMessages feeds a JSON message stream to fn; an error message ends it.
func readMessages(r io.Reader, fn func(api.JSONMessage)) error {
	dec := json.NewDecoder(r)
	for {
		var m api.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if fn != nil {
			fn(m)
		}
	}
}

// Pull pulls an image, reporting progress.
func (c *Client) Pull(ctx context.Context, ref string, auth *api.AuthConfig, fn func(api.JSONMessage)) error {
	resp, err := c.Do(ctx, "POST", "/image/create", url.Values{"imageName": {ref}}, nil, authHeader(auth))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readMessages(resp.Body, fn)
}

// Push pushes an image.
func (c *Client) Push(ctx context.Context, ref string, auth *api.AuthConfig, fn func(api.JSONMessage)) error {
	resp, err := c.Do(ctx, "POST", "/image/push", url.Values{"remote": {ref}}, nil, authHeader(auth))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readMessages(resp.Body, fn)
}

// RemoveImage is DELETE /image.
func (c *Client) RemoveImage(ctx context.Context, ref string, force, noprune bool) ([]api.RemoveItem, error) {
	q := url.Values{"imageId": {ref}, "force": {strconv.FormatBool(force)}, "noprune": {strconv.FormatBool(noprune)}}
	var r api.RemoveResult
	err := c.call(ctx, "DELETE", "/image", q, nil, &r)
	return r.ImagesList, err
}

// Build sends a tar build context.
func (c *Client) Build(ctx context.Context, tarCtx io.Reader, tags []string, dockerfile string, fn func(api.JSONMessage)) error {
	return c.BuildWith(ctx, tarCtx, BuildOptions{Tags: tags, Dockerfile: dockerfile}, fn)
}

// BuildOptions are the /image/build parameters beyond the context.
type BuildOptions struct {
	Tags       []string
	Dockerfile string
	NoCache    bool
	Pull       bool
	Quiet      bool
	NoRm       bool // keep each step's container (rm=0)
	ForceRm    bool // remove the container of a failed step too
	BuildArgs  map[string]string
}

// BuildWith posts a tar build context with every option of /image/build.
func (c *Client) BuildWith(ctx context.Context, tarCtx io.Reader, opt BuildOptions, fn func(api.JSONMessage)) error {
	q := url.Values{"t": opt.Tags}
	if opt.Dockerfile != "" {
		q.Set("dockerfile", opt.Dockerfile)
	}
	for k, on := range map[string]bool{"nocache": opt.NoCache, "pull": opt.Pull, "q": opt.Quiet, "forcerm": opt.ForceRm} {
		if on {
			q.Set(k, "1")
		}
	}
	if opt.NoRm {
		q.Set("rm", "0")
	}
	if len(opt.BuildArgs) > 0 {
		b, _ := json.Marshal(opt.BuildArgs)
		q.Set("buildargs", string(b))
	}
	resp, err := c.Do(ctx, "POST", "/image/build", q, tarCtx, http.Header{"Content-Type": {"application/tar"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readMessages(resp.Body, fn)
}

// Auth checks registry credentials.
func (c *Client) Auth(ctx context.Context, a api.AuthConfig) (string, error) {
	var r api.AuthResult
	err := c.call(ctx, "POST", "/auth", nil, jsonBody(a), &r)
	return r.Status, err
}

// Load loads a docker-archive / OCI tar; returns the loaded names.
func (c *Client) Load(ctx context.Context, tar io.Reader) ([]string, error) {
	resp, err := c.Do(ctx, "POST", "/image/load", nil, tar, http.Header{"Content-Type": {"application/x-tar"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var names []string
	err = readMessages(resp.Body, func(m api.JSONMessage) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(m.Stream), "Loaded image: "); ok {
			names = append(names, n)
		}
	})
	return names, err
}

// Save writes a tar of the images to w.
func (c *Client) Save(ctx context.Context, refs []string, w io.Writer) error {
	resp, err := c.Do(ctx, "GET", "/images/save", url.Values{"imageId": refs}, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}
