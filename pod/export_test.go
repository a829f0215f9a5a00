// Test-only access for the external tests: the daemon's race-window hook
// and its attach waiters.
package pod

// SetTestHook installs f as d's test hook (see Daemon.testHook); call it
// before the daemon serves the operations under test.
func SetTestHook(d *Daemon, f func(event, id string)) { d.testHook = f }

// AttachWaiters is how many attaches wait for container ref to start.
func AttachWaiters(d *Daemon, ref string) int {
	c, _, err := d.ctrAndPod(ref)
	if err != nil {
		return -1
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(c.waiters)
}
