package main

import (
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/sandbox/local"
)

func init() {
	driverFactories["local"] = func(o Options, log *slog.Logger) (sandbox.Driver, error) {
		p, err := exec.LookPath(agentPath())
		if err != nil {
			return nil, fmt.Errorf("local driver: the hyper-agent binary is neither next to hyperd nor in PATH: %w", err)
		}
		log.Info("local sandbox driver", "agent", p)
		return local.New(p), nil
	}
}
