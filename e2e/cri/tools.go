package cri

// This file owns where the CRI tests find cri-tools (critest, crictl): a
// pinned release that scripts/install-cri-tools.sh installs, or
// $HYPERD_CRITEST. It is not a test file so the nested runner (e2e/nested)
// can put the same binary in its L1.

import (
	"fmt"
	"os"
	"path/filepath"
)

// CritestVersion is the cri-tools release scripts/setup.sh installs.
const CritestVersion = "v1.37.0"

// CritestPath is $HYPERD_CRITEST, or where scripts/setup.sh installs
// critest; an error says how to get it.
func CritestPath() (string, error) {
	p := os.Getenv("HYPERD_CRITEST")
	if p == "" {
		p = filepath.Join("/var/cache/hyperd-tools", "cri-tools-"+CritestVersion, "critest")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("critest %s is missing (%v): scripts/setup.sh builds it (scripts/install-cri-tools.sh)", CritestVersion, err)
	}
	return p, nil
}
