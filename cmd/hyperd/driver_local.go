// This file owns the local driver's construction: the hyper-agent binary
// it runs and its user namespace setting (--local-userns).

package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/hyperhq/hyperd-go/internal/userns"
	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/sandbox/local"
)

// DefaultUserNS is the local driver's container id mapping: container ids
// 0..65535 are host ids 1000000000..1000065535, far from the host's users
// (Docker's userns-remap maps one range for every container the same way).
var DefaultUserNS = userns.Map{Host: 1000000000, Size: 65536}

// LocalOptions are the daemon's settings for the local driver.
type LocalOptions struct {
	LocalUserNS string `json:"local-userns"` // auto (""), on, off
}

// flags registers --local-userns; apply copies it over the config file's
// after fs.Parse.
func (o *LocalOptions) flags(fs *flag.FlagSet) (apply func() error) {
	v := fs.String("local-userns", "auto", "local: run containers in a user namespace (container root is host uid "+fmt.Sprint(DefaultUserNS.Host)+", image files keep their ids through idmapped mounts): auto (where the kernel and the data root's file system can), on (fail where they cannot) or off")
	return func() error {
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "local-userns" {
				o.LocalUserNS = *v
			}
		})
		switch o.LocalUserNS {
		case "", "auto", "on", "off":
			return nil
		}
		return fmt.Errorf("--local-userns %q: want auto, on or off", o.LocalUserNS)
	}
}

// userNS decides the local driver's user namespace: nil for none.
func (o LocalOptions) userNS(agentPath, dataRoot string, log *slog.Logger) (*userns.Map, error) {
	if o.LocalUserNS == "off" {
		log.Warn("local driver: containers run without a user namespace (--local-userns=off): a container's root is the host's root, confined by namespaces, capabilities and seccomp only")
		return nil, nil
	}
	if err := os.MkdirAll(dataRoot, 0o700); err != nil {
		return nil, err
	}
	u := DefaultUserNS
	if err := userns.Probe(u, agentPath, dataRoot); err != nil {
		if o.LocalUserNS == "on" {
			return nil, fmt.Errorf("local driver: --local-userns=on: %w", err)
		}
		log.Warn("local driver: containers run without a user namespace, this host cannot give them one (--local-userns=auto)", "err", err)
		return nil, nil
	}
	log.Info("local driver: containers run in a user namespace", "map", u.String())
	return &u, nil
}

func init() {
	driverFactories["local"] = func(o Options, log *slog.Logger) (sandbox.Driver, error) {
		p, err := exec.LookPath(agentPath())
		if err != nil {
			return nil, fmt.Errorf("local driver: the hyper-agent binary is neither next to hyperd nor in PATH: %w", err)
		}
		log.Info("local sandbox driver", "agent", p)
		d := local.New(p)
		if d.UserNS, err = o.LocalOptions.userNS(p, o.DataRoot, log); err != nil {
			return nil, err
		}
		return d, nil
	}
}
