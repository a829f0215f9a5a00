// This file owns the bounds of a container's host-side log: the pod's
// log.config (max-size, max-file as Docker's json-file driver) with the
// daemon's default cap, and the rotation of <cid>.log into <cid>.log.1, .2...

package pod

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// LogLimits bound a container's log on disk: the current file is rotated
// before a record would take it past MaxSize, and MaxFiles files are kept
// (the current one included), so the log takes at most MaxSize*MaxFiles
// bytes plus one record (a record larger than MaxSize is kept whole).
type LogLimits struct {
	MaxSize  int64
	MaxFiles int
}

// DefaultLogLimits apply when neither the pod's log.config nor the daemon's
// --log-opt say otherwise: Docker's local driver defaults (10 MiB x 3).
var DefaultLogLimits = LogLimits{MaxSize: 10 << 20, MaxFiles: 3}

const (
	maxLogSize  = 1 << 40 // 1 TiB per file
	maxLogFiles = 100
)

// logOptsKnown are the keys Docker's json-file driver accepts; only
// max-size and max-file act here, the others are accepted and ignored.
var logOptsKnown = map[string]bool{
	"max-size": true, "max-file": true, "compress": true, "labels": true,
	"labels-regex": true, "env": true, "env-regex": true, "tag": true,
}

// ParseLogLimits reads Docker json-file log options over def: max-size in
// Docker's units (10k, 10m, 1g; binary multiples, an optional "b"/"ib"),
// max-file a count >= 1. Unknown keys and bad values are errors.
func ParseLogLimits(opts map[string]string, def LogLimits) (LogLimits, error) {
	lim := def
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := opts[k]
		switch k {
		case "max-size":
			n, err := parseLogSize(v)
			if err != nil {
				return lim, err
			}
			lim.MaxSize = n
		case "max-file":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 || n > maxLogFiles {
				return lim, fmt.Errorf("log option max-file %q: want a whole number from 1 to %d", v, maxLogFiles)
			}
			lim.MaxFiles = n
		default:
			if !logOptsKnown[k] {
				return lim, fmt.Errorf("unknown log option %q (json-file: max-size, max-file)", k)
			}
		}
	}
	return lim, nil
}

var logSizeRe = regexp.MustCompile(`^(\d+(?:\.\d+)?) ?([kKmMgGtT])?(?:[iI]?[bB])?$`)

func parseLogSize(v string) (int64, error) {
	m := logSizeRe.FindStringSubmatch(strings.TrimSpace(v))
	bad := fmt.Errorf("log option max-size %q: want a positive size such as 10k, 10m or 1g, at most 1t", v)
	if m == nil {
		return 0, bad
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, bad
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[strings.ToLower(m[2])]
	f *= float64(uint64(1) << shift)
	if f < 1 || f > maxLogSize || math.IsNaN(f) {
		return 0, bad
	}
	return int64(f), nil
}

// segPath is the file of the k-th newest segment: the current file for 0,
// then path.1, path.2...
func segPath(path string, k int) string {
	if k == 0 {
		return path
	}
	return path + "." + strconv.Itoa(k)
}

// rotatedFiles lists path.N files (any N >= 1) next to path.
func rotatedFiles(path string) (map[int]string, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)+"."
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		suf, ok := strings.CutPrefix(e.Name(), base)
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suf); err == nil && n >= 1 && strconv.Itoa(n) == suf {
			out[n] = filepath.Join(dir, e.Name())
		}
	}
	return out, nil
}

// rotateLocked closes the current file as segment 1 (older ones shift, the
// one beyond MaxFiles goes) and starts an empty current file. l.mu is held,
// so readers that open segments by name see a consistent set.
func (l *logFile) rotateLocked() error {
	// a write that failed half-way may have left bytes past l.size
	if err := l.f.Truncate(l.size); err != nil {
		return err
	}
	l.f.Close()
	l.f = nil
	n := l.lim.MaxFiles
	if err := os.Remove(segPath(l.path, n-1)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for k := n - 2; k >= 0; k-- {
		if err := os.Rename(segPath(l.path, k), segPath(l.path, k+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	l.f, l.size, l.records = f, 0, 0
	l.seq++
	return nil
}

// dropStale removes rotated files the limits no longer keep (a smaller
// max-file, or a default changed since they were written).
func dropStale(path string, maxFiles int) {
	rot, err := rotatedFiles(path)
	if err != nil {
		return
	}
	for n, p := range rot {
		if n >= maxFiles {
			os.Remove(p)
		}
	}
}

// remove closes the log and deletes its files, rotated ones included.
func (l *logFile) remove() {
	l.close()
	os.Remove(l.path)
	dropStale(l.path, 1)
}
