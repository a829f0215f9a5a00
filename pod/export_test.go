// Test-only access to the daemon's race-window hook for the external tests.
package pod

// SetTestHook installs f as d's test hook (see Daemon.testHook); call it
// before the daemon serves the operations under test.
func SetTestHook(d *Daemon, f func(event, id string)) { d.testHook = f }
