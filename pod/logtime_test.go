package pod

import (
	"testing"
	"time"
)

// TestLogIndexRateByHostClock: a guest that stamps its log records 1 s
// apart while writing them as fast as it can once got the index persisted
// (an fsynced bbolt write) for every record; the rate is the host's now.
func TestLogIndexRateByHostClock(t *testing.T) {
	host := time.Unix(1_800_000_000, 0)
	calls := 0
	persist := rateLimited(200*time.Millisecond, func() time.Time { return host }, func(LogIndex) { calls++ })
	guest := host
	for i := 0; i < 1000; i++ {
		guest = guest.Add(time.Second) // the guest's claim
		host = host.Add(time.Millisecond)
		persist(LogIndex{Last: guest})
	}
	// 1 s of host time: the first call, then one per 200 ms
	if calls < 5 || calls > 6 {
		t.Fatalf("%d persists in 1 s of host time, want 5 or 6", calls)
	}
}

func TestRecordTime(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   time.Time
		want time.Time
	}{
		{"unset", time.Time{}, now},
		{"the guest's clock", now.Add(-3 * time.Second), now.Add(-3 * time.Second)},
		{"a little ahead", now.Add(time.Minute), now.Add(time.Minute)},
		{"year 1970", time.Unix(5, 0), now},
		{"far future", now.Add(1000 * time.Hour), now},
	} {
		if got := recordTime(tc.in, now); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
