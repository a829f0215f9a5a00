package client

// images.go owns the image calls (/images/get, /image/..., /auth, load,
// save) and the JSON message streams they answer with.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/api"
)

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

// messages sends a request whose answer is a JSON message stream and feeds
// it to fn (see readMessages).
func (c *Client) messages(ctx context.Context, path string, q url.Values, body io.Reader, hdr http.Header, fn func(api.JSONMessage)) error {
	resp, err := c.Do(ctx, "POST", path, q, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readMessages(resp.Body, fn)
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
	return c.messages(ctx, "/image/create", url.Values{"imageName": {ref}}, nil, authHeader(auth), fn)
}

// Push pushes an image.
func (c *Client) Push(ctx context.Context, ref string, auth *api.AuthConfig, fn func(api.JSONMessage)) error {
	return c.messages(ctx, "/image/push", url.Values{"remote": {ref}}, nil, authHeader(auth), fn)
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
	return c.messages(ctx, "/image/build", q, tarCtx, http.Header{"Content-Type": {"application/tar"}}, fn)
}

// Auth checks registry credentials.
func (c *Client) Auth(ctx context.Context, a api.AuthConfig) (string, error) {
	var r api.AuthResult
	err := c.call(ctx, "POST", "/auth", nil, jsonBody(a), &r)
	return r.Status, err
}

// Load loads a docker-archive / OCI tar; returns the loaded names.
func (c *Client) Load(ctx context.Context, tar io.Reader) ([]string, error) {
	var names []string
	err := c.messages(ctx, "/image/load", nil, tar, http.Header{"Content-Type": {"application/x-tar"}}, func(m api.JSONMessage) {
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
