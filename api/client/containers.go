package client

// containers.go owns the container and exec calls (/container/...,
// /exitcode, /exec/create) and the logs.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
)

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

// ExecCreate creates an exec; returns its id.
func (c *Client) ExecCreate(ctx context.Context, container string, cmd []string, tty bool) (string, error) {
	b, _ := json.Marshal(cmd)
	q := cq(container)
	q.Set("command", string(b))
	q.Set("tty", strconv.FormatBool(tty))
	var id string
	return id, c.call(ctx, "POST", "/exec/create", q, nil, &id)
}
