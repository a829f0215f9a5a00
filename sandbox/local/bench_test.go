package local

import (
	"fmt"
	"testing"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// BenchmarkPing is the round trip of a no-op control request.
func BenchmarkPing(b *testing.B) {
	p := newPod(b)
	c := ctx(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.a.Ping(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecTrue is exec + wait of /bin/true in a running container.
func BenchmarkExecTrue(b *testing.B) {
	p := newPod(b)
	p.run("c", sandbox.Process{Args: []string{"sleep", "100000"}})
	c := ctx(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("e%d", i)
		if err := p.a.Exec(c, "c", id, sandbox.Process{Args: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		st, err := p.a.Wait(c, "c", id)
		if err != nil || st.Code != 0 {
			b.Fatalf("exit %+v %v", st, err)
		}
	}
}
