// This file owns hyperd's pod network settings (--network, --cni-conf-dir,
// --cni-bin-dir) and wrapping the sandbox driver with package network.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/network"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// NetworkOptions are the daemon's pod network settings.
type NetworkOptions struct {
	Network    string `json:"network"`      // cni ("") or none
	CNIConfDir string `json:"cni-conf-dir"` // default network.DefaultConfDir
	CNIBinDir  string `json:"cni-bin-dir"`  // colon-separated; default network.DefaultBinDirs
}

// flags registers the network flags; apply copies them over the config
// file's after fs.Parse and checks them.
func (o *NetworkOptions) flags(fs *flag.FlagSet) (apply func() error) {
	mode := fs.String("network", "cni", "pod networks: cni (every pod gets an address in the CNI network of --cni-conf-dir; by default hyper0, 192.168.123.0/24) or none (pods have loopback only; port mappings still work)")
	conf := fs.String("cni-conf-dir", network.DefaultConfDir, "CNI network configurations; the first by file name is the pods' network (written, as the original's hyper0 bridge, if the directory has none)")
	bin := fs.String("cni-bin-dir", strings.Join(network.DefaultBinDirs, ":"), "CNI plugin directories, colon-separated")
	return func() error {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "network":
				o.Network = *mode
			case "cni-conf-dir":
				o.CNIConfDir = *conf
			case "cni-bin-dir":
				o.CNIBinDir = *bin
			}
		})
		switch o.Network {
		case "", "cni", "none":
			return nil
		}
		return fmt.Errorf("--network %q: want cni or none", o.Network)
	}
}

// withNetwork wraps drv so that every pod gets its network; nil without
// networking (--network none).
func (o NetworkOptions) withNetwork(drv sandbox.Driver, dataRoot string, log *slog.Logger) (*network.Driver, error) {
	if o.Network == "none" {
		log.Info("pod networks are off (--network none): pods have loopback only")
		return nil, nil
	}
	var bins []string
	if o.CNIBinDir != "" {
		bins = filepath.SplitList(o.CNIBinDir)
	}
	m, err := network.New(network.Options{ConfDir: o.CNIConfDir, BinDirs: bins, StateDir: filepath.Join(dataRoot, "network"), Log: log})
	if err != nil {
		return nil, fmt.Errorf("%w (--network none runs pods without one)", err)
	}
	log.Info("pod network", "network", m.Name(), "conf-dir", o.CNIConfDir)
	return &network.Driver{Driver: drv, M: m, Log: log}, nil
}

// collectNetworks releases, once the daemon reattached its pods, the
// networks no pod uses any more.
func collectNetworks(nd *network.Driver, wait func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := wait(ctx); err != nil {
		log.Warn("pod networks: reattaching took too long; leftover networks are released at the next start", "err", err)
		return
	}
	nd.Collect(ctx)
}
