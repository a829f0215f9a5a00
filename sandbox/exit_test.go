package sandbox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestExitFirstCallWins(t *testing.T) {
	e := NewExit()
	select {
	case <-e.Done():
		t.Fatal("done before Exited")
	default:
	}
	if e.Err() != nil {
		t.Fatal("error before Exited")
	}
	first := errors.New("first")
	var wg sync.WaitGroup
	e.Exited(first)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); e.Exited(errors.New("later")) }()
	}
	wg.Wait()
	<-e.Done()
	if e.Err() != first {
		t.Fatalf("Err = %v, want the first", e.Err())
	}
}

func TestExitShutdown(t *testing.T) {
	// the sandbox ends by itself: no kill
	e := NewExit()
	e.Exited(nil)
	e.Shutdown(context.Background(), nil, func() { t.Error("killed a sandbox that had ended") })
	// it does not end: the deadline leads to kill, which ends it
	e = NewExit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	killed := false
	e.Shutdown(ctx, nil, func() { killed = true; e.Exited(errors.New("killed")) })
	if !killed || e.Err() == nil {
		t.Errorf("killed %v, err %v", killed, e.Err())
	}
}
