package client

// pods.go owns the pod calls (/pod/..., /list).

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strconv"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
)

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
