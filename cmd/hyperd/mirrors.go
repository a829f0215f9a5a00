// This file owns hyperd's registry mirrors (--registry-mirror), handed to
// the image store (image/mirror.go).
package main

import (
	"flag"
	"fmt"

	"github.com/hyperhq/hyperd-go/image"
	"github.com/hyperhq/hyperd-go/pod"
)

// MirrorOptions are the daemon's registry mirrors.
type MirrorOptions struct {
	RegistryMirrors []string `json:"registry-mirrors,omitempty"`
}

// flags registers --registry-mirror; apply copies it over the config
// file's after fs.Parse and checks every mirror.
func (o *MirrorOptions) flags(fs *flag.FlagSet) (apply func() error) {
	var l listFlag
	fs.Var(&l, "registry-mirror", "[REGISTRY=]URL: pulls of REGISTRY's images (default docker.io) try the mirror at URL (http[s]://host[:port][/path]; with a path, REGISTRY's repository R is path/R there) first, then the registry (repeatable; mirrors are tried in order)")
	return func() error {
		if len(l) > 0 {
			o.RegistryMirrors = append([]string(nil), l...)
		}
		_, err := o.mirrors()
		return err
	}
}

func (o MirrorOptions) mirrors() ([]image.Mirror, error) {
	var out []image.Mirror
	for _, s := range o.RegistryMirrors {
		m, err := image.ParseMirror(s)
		if err != nil {
			return nil, fmt.Errorf("--registry-mirror: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// applyMirrors sets the mirrors of the image store behind imgs.
func (o MirrorOptions) applyMirrors(imgs pod.Images) error {
	ms, err := o.mirrors()
	if err != nil {
		return err
	}
	if a, ok := imgs.(*imageAdapter); ok {
		a.st.Mirrors = ms
	} else if len(ms) > 0 {
		return fmt.Errorf("--registry-mirror: this hyperd has no image store")
	}
	return nil
}
