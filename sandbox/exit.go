package sandbox

import (
	"context"
	"sync"
)

// Exit records, once, how a sandbox ended. Drivers embed it (made with
// NewExit) to implement Sandbox.Done and Sandbox.Err.
type Exit struct {
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

// NewExit returns an Exit whose Done is still open.
func NewExit() *Exit { return &Exit{done: make(chan struct{})} }

// Done is closed once Exited was called.
func (e *Exit) Done() <-chan struct{} { return e.done }

// Err is why the sandbox ended (nil while it runs).
func (e *Exit) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Exited records err and closes Done; only the first call counts.
func (e *Exit) Exited(err error) {
	e.once.Do(func() {
		e.mu.Lock()
		e.err = err
		e.mu.Unlock()
		close(e.done)
	})
}

// Shutdown asks agent (if any) to power the sandbox off and waits for
// Done until ctx ends; then it calls kill and waits for Done.
func (e *Exit) Shutdown(ctx context.Context, agent Agent, kill func()) {
	if agent != nil {
		agent.Shutdown(ctx)
		agent.Close()
	}
	select {
	case <-e.Done():
	case <-ctx.Done():
		kill()
		<-e.Done()
	}
}
