// Command mkbusybox writes a busybox docker-archive (for hyperctl load)
// built from the host's static busybox: no network needed.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
)

func main() {
	out := flag.String("o", "busybox.tar", "output tar")
	tag := flag.String("t", "busybox:latest", "repo:tag")
	flag.Parse()
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	if err := imgtest.Write(f, bb, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
}
