// Package cri holds hyperd's CRI end-to-end tests: critest (cri-tools'
// conformance suite) against a real hyperd, and Go tests that drive the
// CRI's gRPC API of a real hyperd directly. The critest images are built
// here from Debian's busybox-static and served by a local docker-registry
// through hyperd's --registry-mirror (these machines reach no public
// registry). Tests only: nothing in hyperd imports it.
package cri
