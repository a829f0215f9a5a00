package image

import (
	"encoding/json"
	"fmt"
	"strings"
)

type progressDetail struct {
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
}

type errorDetail struct {
	Message string `json:"message"`
}

// MarshalJSON encodes a Progress as Docker's JSON message:
// {"status","id","progress","progressDetail":{"current","total"},"error","errorDetail":{"message"}}.
func (p Progress) MarshalJSON() ([]byte, error) {
	var m struct {
		Status         string          `json:"status,omitempty"`
		ID             string          `json:"id,omitempty"`
		Progress       string          `json:"progress,omitempty"`
		ProgressDetail *progressDetail `json:"progressDetail,omitempty"`
		Error          string          `json:"error,omitempty"`
		ErrorDetail    *errorDetail    `json:"errorDetail,omitempty"`
	}
	m.Status, m.ID, m.Progress, m.Error = p.Status, p.ID, p.Progress, p.Error
	if p.Current != 0 || p.Total != 0 {
		m.ProgressDetail = &progressDetail{p.Current, p.Total}
	}
	if p.Error != "" {
		m.ErrorDetail = &errorDetail{p.Error}
	}
	return json.Marshal(m)
}

// ListLines renders the image for hyperd's GET /images/get: one
// "<repo>:<tag>:<hex id>:<created unix>:<virtual size>" line per tag, or
// "<none>:<none>:..." when untagged. Clients split from the right, so repositories
// with registry ports survive.
func (im Image) ListLines() []string {
	tags := im.RepoTags
	if len(tags) == 0 {
		tags = []string{"<none>:<none>"}
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		out = append(out, fmt.Sprintf("%s:%s:%d:%d", t, strings.TrimPrefix(im.ID, "sha256:"), im.Created.Unix(), im.Size))
	}
	return out
}
