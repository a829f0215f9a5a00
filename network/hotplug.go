package network

// This file forwards the sandbox's optional contracts through the network
// wrapper.

import (
	"context"
	"fmt"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// AddDisk implements sandbox.DiskAdder when the wrapped sandbox does.
func (s *netSandbox) AddDisk(ctx context.Context, d sandbox.Disk) error {
	a, ok := s.Sandbox.(sandbox.DiskAdder)
	if !ok {
		return fmt.Errorf("the %s sandbox cannot take a disk while it runs", s.Sandbox.Handle().Driver)
	}
	return a.AddDisk(ctx, d)
}
