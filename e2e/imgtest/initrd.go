// This file owns the "no agent" initramfs of the boot-deadline tests: a
// guest that boots for real and then never answers.
package imgtest

import (
	"os"

	"github.com/u-root/u-root/pkg/cpio"
)

// SilentInitrd writes to path a newc cpio whose /init (a busybox shell
// script) prints a line on the console and sleeps for ever: the kernel
// boots to userspace but no agent ever answers, so the sandbox's boot
// deadline is what ends it.
func SilentInitrd(path string) error {
	bb, err := BusyboxPath()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(f)
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile("bin/busybox", string(data), 0o755),
		cpio.Symlink("bin/sh", "busybox"),
		cpio.Symlink("bin/sleep", "busybox"),
		cpio.StaticFile("init", "#!/bin/sh\necho 'silent init: no agent in this guest'\nexec sleep 1000000\n", 0o755),
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		f.Close()
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
