#!/usr/bin/env bash
# Installs cri-tools' critest and crictl at a pinned version into a cache
# outside the repository (a machine builds them once):
#   $CRI_TOOLS_CACHE (default /var/cache/hyperd-tools)/cri-tools-$VERSION/
# crictl is `go install`ed; critest is a Ginkgo test binary, which
# `go install` cannot build, so it is `go test -c`'d from the same module
# version in the module cache (what cri-tools' own Makefile does).
# Used by scripts/setup.sh; e2e/cri (TestCritest) runs critest from there.
set -euo pipefail
VERSION=v1.37.0 # keep e2e/cri CritestVersion (tools.go) in step
CACHE=${CRI_TOOLS_CACHE:-/var/cache/hyperd-tools}
DIR=$CACHE/cri-tools-$VERSION
if [ -x "$DIR/critest" ] && [ -x "$DIR/crictl" ]; then
	exit 0
fi
export PATH=/usr/local/go/bin:$PATH
mkdir -p "$DIR"
echo "install-cri-tools: building critest and crictl $VERSION into $DIR (once per machine)"
export CGO_ENABLED=0
GOBIN="$DIR" go install "sigs.k8s.io/cri-tools/cmd/crictl@$VERSION"
go mod download "sigs.k8s.io/cri-tools@$VERSION"
src=$(go env GOMODCACHE)/sigs.k8s.io/cri-tools@$VERSION
(cd "$src" && GOFLAGS=-mod=mod go test -c -o "$DIR/critest.tmp" ./cmd/critest)
mv "$DIR/critest.tmp" "$DIR/critest"
echo "install-cri-tools: critest and crictl $VERSION are in $DIR"
