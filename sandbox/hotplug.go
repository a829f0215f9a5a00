package sandbox

// This file owns the optional contract of a sandbox that takes disks after
// its creation (the CRI adds containers, and their images, to a running
// pod sandbox one by one).

import "context"

// DiskAdder is a Sandbox that can be given a Disk while it runs; after
// AddDisk, DiskSource knows it and Handle carries it (so a reattached
// sandbox knows it too). A Sandbox without it has the Disks of its Config
// only.
type DiskAdder interface {
	AddDisk(ctx context.Context, d Disk) error
}
