package sandbox

import (
	"errors"
	"sync"
	"testing"
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
