// This file owns l1init's SIGCHLD subscription (the reaper's wake-up).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func signalNotify(c chan os.Signal) { signal.Notify(c, syscall.SIGCHLD) }
