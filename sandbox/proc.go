package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ProcStat returns the fields of /proc/<pid>/stat after the command name,
// indexed from 0 = state (proc(5) field 3): utime is [11], stime [12],
// cutime [13], cstime [14], starttime [19], rss (pages) [21]. Drivers use
// it for HostStats and to recognise their own processes.
func ProcStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}
