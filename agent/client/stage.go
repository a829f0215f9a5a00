// This file owns sending container files too big for one frame: each is
// staged in the agent in chunks (protocol.OpStage) and the container spec
// names it instead of carrying it.
package client

import (
	"context"
	"fmt"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// inlineMax is the largest file sent inside the container spec; bigger
// ones are staged. Well below protocol.MaxFrame even base64-encoded and
// several at once.
const inlineMax = 256 << 10

// stageFiles stages spec's big files and makes spec name them.
func (c *Client) stageFiles(ctx context.Context, spec *protocol.ContainerSpec) error {
	for i := range spec.Files {
		f := &spec.Files[i]
		if len(f.Content) <= inlineMax {
			continue
		}
		name := fmt.Sprintf("%s.file%d", spec.ID, i)
		data := f.Content
		for first := true; first || len(data) > 0; first = false {
			n := min(len(data), protocol.StageChunkMax)
			if err := c.call(ctx, protocol.OpStage, protocol.StageChunk{Name: name, Data: data[:n], Append: !first}, nil); err != nil {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
			data = data[n:]
		}
		f.Content, f.Staged = nil, name
	}
	return nil
}
