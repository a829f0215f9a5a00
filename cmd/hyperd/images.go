package main

import (
	"log/slog"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
)

// openImages opens the image store under the data root. Until the image
// package is in this tree, there is none: pods cannot be created and the
// image routes answer 501.
func openImages(o Options, log *slog.Logger) (pod.Images, api.ImageService, error) {
	return nil, nil, nil
}
