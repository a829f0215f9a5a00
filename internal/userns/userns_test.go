// Tests of the mapping's text form and of a namespace made with it: an
// idmapped copy of a directory shows on-disk ids shifted by the mapping,
// read-only when asked.

package userns

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Map
		ok   bool
	}{
		{"1000000000:65536", Map{1000000000, 65536}, true},
		{"100000:1", Map{100000, 1}, true},
		{"0:65536", Map{}, false}, // host root is never a container's
		{"100000:0", Map{}, false},
		{"4294967295:2", Map{}, false},
		{"100000", Map{}, false},
		{"x:1", Map{}, false},
		{"-1:5", Map{}, false},
	} {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

// TestMain makes the test binary a holder too (New starts it with
// HoldArg).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HoldArg {
		RunHold()
	}
	os.Exit(m.Run())
}

// holderBin is this test binary.
func holderBin(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("user namespaces with a mapping need root; run as root")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestNewAndIdmapped(t *testing.T) {
	m := Map{Host: 1000000000, Size: 65536}
	n, err := New(m, holderBin(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(dir, "f"), 1000, 1000)
	if err := n.Probe(dir); err != nil {
		t.Fatal(err)
	}
	fd, err := n.Idmapped(dir, false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "f", &st, 0); err != nil {
		t.Fatal(err)
	}
	if st.Uid != m.Host+1000 || st.Gid != m.Host+1000 {
		t.Errorf("through the idmapped copy f is owned by %d:%d, want %d:%d", st.Uid, st.Gid, m.Host+1000, m.Host+1000)
	}
	if err := unix.Faccessat(fd, "f", unix.W_OK, unix.AT_EACCESS); err != unix.EROFS {
		t.Errorf("write access through the read-only copy: %v, want EROFS", err)
	}
}
