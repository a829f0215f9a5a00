package agent

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper owns every child of the process: it starts them and collects every
// exit with wait4(-1), so it also reaps orphans reparented to a PID 1.
// Nothing else in the process may wait for children.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	once    sync.Once
}

func newReaper() *reaper {
	return &reaper{waiters: map[int]chan syscall.WaitStatus{}}
}

func (r *reaper) run() {
	r.once.Do(func() {
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, unix.SIGCHLD)
		go func() {
			for {
				r.reap()
				<-ch
			}
		}()
	})
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if w, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			w <- ws
		}
	}
}

// start forks and execs; the returned channel receives the exit status.
func (r *reaper) start(path string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// exitCode turns a wait status into (code, signal) with 128+sig for a
// killed process.
func exitCode(ws syscall.WaitStatus) (int, int) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}
