package api

// system.go owns the daemon's own routes: /_ping, /version and /info.

import (
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
)

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("OK"))
}

func (s *Server) version(r *http.Request) (any, error) {
	return VersionInfo{Version: s.Version, APIVersion: APIVersion, GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH, Driver: s.Pods.DriverName()}, nil
}

func (s *Server) info(r *http.Request) (any, error) {
	pods, ctrs, running := s.Pods.Counts()
	host, _ := os.Hostname()
	images := 0
	if s.Images != nil {
		if l, err := s.Images.List(false); err == nil {
			images = len(l)
		}
	}
	drv := s.Pods.DriverName()
	iso := s.Pods.Isolation()
	st := [][]string{{"Sandbox driver", drv}, {"Isolation", iso}, {"Running pods", strconv.Itoa(running)}}
	if s.Warning != "" {
		st = append(st, []string{"WARNING", s.Warning})
	}
	return Info{ID: host, Containers: ctrs, Images: images, Driver: drv, DriverStatus: st, MemTotal: memTotal(),
		Pods: pods, OperatingSystem: osName(), Name: host, DockerRootDir: s.DataRoot, SandboxDriver: drv, Isolation: iso,
		Warning: s.Warning, RunningPods: running}, nil
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func osName() string {
	b, err := os.ReadFile("/etc/os-release")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				return strings.Trim(v, `"`)
			}
		}
	}
	return runtime.GOOS
}
