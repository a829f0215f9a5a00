// This file owns the pod spec (podArgs): its types with the original
// hyperd's field names, decoding, defaults and validation.

package pod

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// PodSpec is the original hyperd's pod description ("podArgs"). JSON field
// names are the original's; Go's decoder matches them case-insensitively and
// ignores unknown fields (open schema).
type PodSpec struct {
	ID            string            `json:"id"`
	Hostname      string            `json:"hostname"`
	Type          string            `json:"type,omitempty"`
	RestartPolicy string            `json:"restartPolicy,omitempty"`
	Tty           bool              `json:"tty,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Resource      Resource          `json:"resource"`
	Log           LogConfig         `json:"log"`
	DNS           []string          `json:"dns,omitempty"`
	DNSOptions    []string          `json:"dnsOptions,omitempty"`
	DNSSearch     []string          `json:"dnsSearch,omitempty"`
	Containers    []ContainerSpec   `json:"containers"`
	Files         []FileSpec        `json:"files,omitempty"`
	Volumes       []VolumeSpec      `json:"volumes,omitempty"`
	Interfaces    []InterfaceSpec   `json:"interfaces,omitempty"`
	Services      []ServiceSpec     `json:"services,omitempty"`
	PortMappings  []PortMapping     `json:"portmappings,omitempty"`
}

// Resource is the VM size.
type Resource struct {
	VCPU   int `json:"vcpu"`
	Memory int `json:"memory"` // MiB
}

// LogConfig is the original's log driver selection; only the host-side
// capture ("json-file" or "") is implemented.
type LogConfig struct {
	Type   string            `json:"type,omitempty"`
	Config map[string]string `json:"config,omitempty"`
}

// ContainerSpec is one container of a pod (also the body of /container/create).
type ContainerSpec struct {
	Name          string            `json:"name"`
	Image         string            `json:"image"`
	Workdir       string            `json:"workdir,omitempty"`
	RestartPolicy string            `json:"restartPolicy,omitempty"`
	Tty           bool              `json:"tty,omitempty"`
	Sysctl        map[string]string `json:"sysctl,omitempty"`
	Envs          []EnvVar          `json:"envs,omitempty"`
	Command       []string          `json:"command,omitempty"`
	Entrypoint    []string          `json:"entrypoint,omitempty"`
	Ports         []PortMapping     `json:"ports,omitempty"`
	Volumes       []VolumeRef       `json:"volumes,omitempty"`
	Files         []FileRef         `json:"files,omitempty"`
	User          UserSpec          `json:"user"`
	Labels        map[string]string `json:"labels,omitempty"`
	ID            string            `json:"id,omitempty"`
	StopSignal    string            `json:"StopSignal,omitempty"`
	Ulimits       []Ulimit          `json:"ulimits,omitempty"`
	LogPath       string            `json:"logPath,omitempty"`
	ReadOnly      bool              `json:"readOnly,omitempty"`
}

// EnvVar is one environment variable.
type EnvVar struct {
	Env   string `json:"env"`
	Value string `json:"value"`
}

// VolumeRef mounts a pod volume into a container.
type VolumeRef struct {
	Path     string `json:"path"`
	Volume   string `json:"volume"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// FileRef places a pod file into a container.
type FileRef struct {
	Path     string `json:"path"`
	Filename string `json:"filename"`
	Perm     string `json:"perm,omitempty"`
	User     string `json:"user,omitempty"`
	Group    string `json:"group,omitempty"`
}

// UserSpec is the user a container runs as.
type UserSpec struct {
	Name             string   `json:"name,omitempty"`
	Group            string   `json:"group,omitempty"`
	AdditionalGroups []string `json:"additionalGroups,omitempty"`
}

// Ulimit is accepted for compatibility and recorded; it is not enforced.
type Ulimit struct {
	Name string `json:"name"`
	Soft int64  `json:"soft"`
	Hard int64  `json:"hard"`
}

// VolumeSpec is a pod volume: a host directory (format "vfs" or empty), a
// raw disk image (kvm), or, with no source, a fresh empty directory.
type VolumeSpec struct {
	Name   string `json:"name"`
	Source string `json:"source,omitempty"`
	Format string `json:"format,omitempty"`
	Fstype string `json:"fstype,omitempty"`
}

// FileSpec is a pod file: inline content (raw or base64) or a uri (http/https).
type FileSpec struct {
	Name     string `json:"name"`
	Encoding string `json:"encoding,omitempty"`
	URI      string `json:"uri,omitempty"`
	Content  string `json:"content,omitempty"`
}

// InterfaceSpec is the pod's interface in the daemon's network: an
// address, MAC, MTU, gateway or name of the pod's choosing (bridge, if
// set, must be the network's bridge).
type InterfaceSpec struct {
	Bridge  string `json:"bridge,omitempty"`
	IP      string `json:"ip,omitempty"`
	Ifname  string `json:"ifname,omitempty"`
	Mac     string `json:"mac,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Mtu     uint64 `json:"mtu,omitempty"`
}

// ServiceSpec is the original's in-VM haproxy service; a pod that asks
// for one is refused (400) with the alternatives.
type ServiceSpec struct {
	ServiceIP   string `json:"serviceip"`
	ServicePort int    `json:"serviceport"`
	Protocol    string `json:"protocol"`
}

// PortString is a port or port range. It decodes from a JSON string or number.
type PortString string

// UnmarshalJSON accepts "80", "8000-8080" and 80.
func (p *PortString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = PortString(strings.TrimSpace(s))
		return nil
	}
	if string(b) == "null" {
		*p = ""
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("port must be a string or a number")
	}
	if _, err := n.Int64(); err != nil {
		return fmt.Errorf("port %s is not an integer", n)
	}
	*p = PortString(n.String())
	return nil
}

// PortMapping maps host port(s) to container port(s) of a pod.
type PortMapping struct {
	ContainerPort PortString `json:"containerPort"`
	HostPort      PortString `json:"hostPort"`
	Protocol      string     `json:"protocol"`
}

// SpecError is a validation error; the API answers it with 400.
type SpecError struct{ Msg string }

func (e *SpecError) Error() string { return e.Msg }

func specErr(format string, a ...any) error { return &SpecError{Msg: fmt.Sprintf(format, a...)} }

// DecodePodSpec parses podArgs JSON. Unknown fields are ignored. It does not
// apply defaults or validate; see (*PodSpec).Normalize.
func DecodePodSpec(data []byte) (*PodSpec, error) {
	var s PodSpec
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, specErr("bad parameter: empty pod spec (podArgs)")
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, specErr("bad parameter: malformed pod spec (podArgs): %v", err)
	}
	return &s, nil
}

// DecodeContainerSpec parses a container spec JSON.
func DecodeContainerSpec(data []byte) (*ContainerSpec, error) {
	var c ContainerSpec
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, specErr("bad parameter: empty container spec")
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, specErr("bad parameter: malformed container spec: %v", err)
	}
	return &c, nil
}

const idLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// RandomLetters returns n random ASCII letters (the original's id alphabet).
func RandomLetters(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = idLetters[int(b[i])%len(idLetters)]
	}
	return string(b)
}

var (
	dnsLabelRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	nameRe     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	permRe     = regexp.MustCompile(`^0[0-7]{3}$`)
	envNameRe  = regexp.MustCompile(`^[^=\x00]+$`)
)

// Restart policies.
const (
	RestartNever     = "never"
	RestartAlways    = "always"
	RestartOnFailure = "onFailure"
)

func normRestart(p string) (string, bool) {
	switch strings.ToLower(p) {
	case "", "never", "no":
		return RestartNever, true
	case "always":
		return RestartAlways, true
	case "onfailure", "on-failure":
		return RestartOnFailure, true
	}
	return "", false
}

// MaxContainers bounds a pod's size so one request cannot exhaust the daemon.
const MaxContainers = 64

// Normalize applies the original's defaults and validates the spec.
// Errors are *SpecError. It does not consult images (see the daemon).
func (s *PodSpec) Normalize() error {
	if s.ID == "" {
		s.ID = "pod-" + RandomLetters(10)
	}
	if err := checkName("pod id", s.ID, maxIDLen); err != nil {
		return err
	}
	if s.Hostname == "" {
		h := strings.ToLower(s.ID)
		if len(h) > 63 {
			h = h[:63]
		}
		h = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
				return r
			}
			return '-'
		}, h)
		s.Hostname = strings.Trim(h, "-.")
		if s.Hostname == "" {
			s.Hostname = "pod"
		}
	}
	if len(s.Hostname) > 63 {
		return specErr("bad parameter: hostname exceeds the maximum length 63, len: %d", len(s.Hostname))
	}
	for _, seg := range strings.Split(s.Hostname, ".") {
		if !dnsLabelRe.MatchString(seg) {
			return specErr("bad parameter: hostname %q must be DNS labels ([a-z0-9]([-a-z0-9]*[a-z0-9])?) separated by dots", s.Hostname)
		}
	}
	rp, ok := normRestart(s.RestartPolicy)
	if !ok {
		return specErr("bad parameter: unknown restartPolicy %q (never, always, onFailure)", s.RestartPolicy)
	}
	s.RestartPolicy = rp
	if s.Resource.VCPU < 0 || s.Resource.VCPU > 64 {
		return specErr("bad parameter: resource.vcpu %d out of range 0..64", s.Resource.VCPU)
	}
	if s.Resource.Memory < 0 || s.Resource.Memory > 1<<20 {
		return specErr("bad parameter: resource.memory %d MiB out of range", s.Resource.Memory)
	}
	if s.Log.Type != "" && s.Log.Type != "json-file" && s.Log.Type != "none" {
		return specErr("bad parameter: log type %q not supported (json-file)", s.Log.Type)
	}
	if _, err := ParseLogLimits(s.Log.Config, DefaultLogLimits); err != nil {
		return specErr("bad parameter: log.config: %v", err)
	}
	for _, d := range s.DNS {
		if net.ParseIP(d) == nil {
			return specErr("bad parameter: incorrect dns %q (must be an IP address)", d)
		}
	}
	for _, l := range [][]string{s.DNSSearch, s.DNSOptions} {
		for _, d := range l {
			if d == "" || len(d) > 253 || strings.ContainsAny(d, " \t\r\n#;") {
				return specErr("bad parameter: incorrect dns search or option %q", d)
			}
		}
	}
	if len(s.Interfaces) > 1 {
		return specErr("bad parameter: %d interfaces: a pod has one, in the daemon's CNI network", len(s.Interfaces))
	}
	for _, i := range s.Interfaces {
		if err := i.request().Validate(); err != nil {
			return specErr("bad parameter: interface: %v", err)
		}
	}
	if len(s.Services) > 0 {
		return specErr("bad parameter: services (the original's in-pod load balancer) are not supported: reach a pod at its address (podIP in /pod/info) or through port mappings")
	}
	if len(s.Containers) > MaxContainers {
		return specErr("bad parameter: too many containers (%d > %d)", len(s.Containers), MaxContainers)
	}
	vols := map[string]bool{}
	for i, v := range s.Volumes {
		if v.Name == "" {
			return specErr("bad parameter: volume %d has no name", i)
		}
		if err := checkName("volume name", v.Name, maxIDLen); err != nil {
			return err
		}
		if vols[v.Name] {
			return specErr("bad parameter: volume name %q is not unique", v.Name)
		}
		vols[v.Name] = true
		switch v.Format {
		case "", "vfs", "raw", "qcow2", "vdi", "rbd", "nas":
		default:
			return specErr("bad parameter: volume %q: format %q not supported", v.Name, v.Format)
		}
	}
	files := map[string]bool{}
	for i, f := range s.Files {
		if f.Name == "" {
			return specErr("bad parameter: file %d has no name", i)
		}
		if err := checkName("file name", f.Name, maxIDLen); err != nil {
			return err
		}
		if files[f.Name] {
			return specErr("bad parameter: file name %q is not unique", f.Name)
		}
		files[f.Name] = true
		switch f.Encoding {
		case "", "raw":
		case "base64":
			if _, err := base64.StdEncoding.DecodeString(f.Content); err != nil {
				return specErr("bad parameter: file %q: invalid base64 content", f.Name)
			}
		default:
			return specErr("bad parameter: file %q: encoding %q not supported (raw, base64)", f.Name, f.Encoding)
		}
		if f.URI != "" && !strings.HasPrefix(f.URI, "http://") && !strings.HasPrefix(f.URI, "https://") {
			return specErr("bad parameter: file %q: uri %q must be http:// or https://", f.Name, f.URI)
		}
	}
	for i := range s.PortMappings {
		if _, err := ExpandPortMapping(s.PortMappings[i]); err != nil {
			return err
		}
		s.PortMappings[i] = normPM(s.PortMappings[i])
	}
	names := map[string]bool{}
	for i := range s.Containers {
		c := &s.Containers[i]
		if s.Tty {
			c.Tty = true
		}
		if c.RestartPolicy == "" {
			c.RestartPolicy = s.RestartPolicy
		}
		if err := c.normalize(s.ID, i, vols, files); err != nil {
			return err
		}
		if names[c.Name] {
			return specErr("bad parameter: container name %q is not unique in the pod", c.Name)
		}
		names[c.Name] = true
	}
	return nil
}

func normPM(pm PortMapping) PortMapping {
	pm.Protocol = strings.ToLower(pm.Protocol)
	if pm.Protocol == "" {
		pm.Protocol = "tcp"
	}
	if pm.HostPort == "" {
		pm.HostPort = pm.ContainerPort
	}
	return pm
}

// imageBase is the last path element of an image reference without tag/digest.
func imageBase(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	if i := strings.IndexByte(ref, ':'); i >= 0 {
		ref = ref[:i]
	}
	return ref
}

// normalize validates one container; vols and files are the pod's names
// (nil when validating a container added to an existing pod: then the
// caller passes the pod's sets).
func (c *ContainerSpec) normalize(podID string, idx int, vols, files map[string]bool) error {
	if strings.TrimSpace(c.Image) == "" {
		return specErr("bad parameter: container %d has no image", idx)
	}
	if strings.ContainsAny(c.Image, " \t\n\x00") {
		return specErr("bad parameter: invalid image reference %q", c.Image)
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s-%s-%d", podID, imageBase(c.Image), idx)
	}
	c.Name = strings.TrimPrefix(c.Name, "/")
	if err := checkName("container name", c.Name, maxNameLen); err != nil {
		return err
	}
	if c.ID != "" {
		// the id names the container's log file on the host
		if err := checkName("container id", c.ID, maxIDLen); err != nil {
			return err
		}
	}
	rp, ok := normRestart(c.RestartPolicy)
	if !ok {
		return specErr("bad parameter: container %q: unknown restartPolicy %q (never, always, onFailure)", c.Name, c.RestartPolicy)
	}
	c.RestartPolicy = rp
	envs := map[string]bool{}
	for _, e := range c.Envs {
		if !envNameRe.MatchString(e.Env) {
			return specErr("bad parameter: container %q: invalid environment variable name %q", c.Name, e.Env)
		}
		if envs[e.Env] {
			return specErr("bad parameter: container %q: environment name %q is not unique", c.Name, e.Env)
		}
		envs[e.Env] = true
	}
	mnt := map[string]bool{}
	for _, v := range c.Volumes {
		if !vols[v.Volume] {
			return specErr("bad parameter: container %q: volume %q does not exist in the pod's volume list", c.Name, v.Volume)
		}
		if !strings.HasPrefix(v.Path, "/") {
			return specErr("bad parameter: container %q: volume mount path %q must be absolute", c.Name, v.Path)
		}
		if mnt[v.Path] {
			return specErr("bad parameter: container %q: mount path %q used twice", c.Name, v.Path)
		}
		mnt[v.Path] = true
	}
	for i := range c.Files {
		f := &c.Files[i]
		if !files[f.Filename] {
			return specErr("bad parameter: container %q: file %q does not exist in the pod's file list", c.Name, f.Filename)
		}
		if !strings.HasPrefix(f.Path, "/") {
			return specErr("bad parameter: container %q: file path %q must be absolute", c.Name, f.Path)
		}
		if f.Perm == "" {
			f.Perm = "0755"
		}
		if f.Perm != "0" && !permRe.MatchString(f.Perm) {
			return specErr("bad parameter: container %q: file permission %q must be octal like 0644", c.Name, f.Perm)
		}
	}
	for i := range c.Ports {
		if _, err := ExpandPortMapping(normPM(c.Ports[i])); err != nil {
			return err
		}
		c.Ports[i] = normPM(c.Ports[i])
	}
	if c.StopSignal != "" {
		if _, err := ParseSignal(c.StopSignal); err != nil {
			return specErr("bad parameter: container %q: %v", c.Name, err)
		}
	}
	if c.Workdir != "" && !strings.HasPrefix(c.Workdir, "/") {
		return specErr("bad parameter: container %q: workdir %q must be absolute", c.Name, c.Workdir)
	}
	return nil
}

// PortPair is one expanded host→container port.
type PortPair struct {
	Proto     string
	Host      int
	Container int
}

func parseRange(s PortString) (lo, hi int, err error) {
	str := string(s)
	a, b, isRange := strings.Cut(str, "-")
	lo, err = strconv.Atoi(strings.TrimSpace(a))
	if err != nil {
		return 0, 0, fmt.Errorf("invalid port %q", str)
	}
	hi = lo
	if isRange {
		hi, err = strconv.Atoi(strings.TrimSpace(b))
		if err != nil {
			return 0, 0, fmt.Errorf("invalid port range %q", str)
		}
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("port %q out of range 1-65535", str)
	}
	return lo, hi, nil
}

// MaxPortsPerMapping bounds a range so one request cannot open 65535 listeners.
const MaxPortsPerMapping = 1024

// ExpandPortMapping turns a mapping into individual pairs; errors are *SpecError.
func ExpandPortMapping(pm PortMapping) ([]PortPair, error) {
	pm = normPM(pm)
	if pm.Protocol != "tcp" && pm.Protocol != "udp" {
		return nil, specErr("bad parameter: port mapping protocol %q must be tcp or udp", pm.Protocol)
	}
	clo, chi, err := parseRange(pm.ContainerPort)
	if err != nil {
		return nil, specErr("bad parameter: containerPort: %v", err)
	}
	hlo, hhi, err := parseRange(pm.HostPort)
	if err != nil {
		return nil, specErr("bad parameter: hostPort: %v", err)
	}
	n := chi - clo + 1
	if hhi-hlo+1 != n {
		return nil, specErr("bad parameter: hostPort range %q and containerPort range %q differ in size", pm.HostPort, pm.ContainerPort)
	}
	if n > MaxPortsPerMapping {
		return nil, specErr("bad parameter: port range of %d ports exceeds %d", n, MaxPortsPerMapping)
	}
	out := make([]PortPair, n)
	for i := 0; i < n; i++ {
		out[i] = PortPair{Proto: pm.Protocol, Host: hlo + i, Container: clo + i}
	}
	return out, nil
}

var signals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
	"KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
	"STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
	"URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
	"PWR": 30, "SYS": 31,
}

// ParseSignal accepts "9", "KILL", "SIGKILL".
func ParseSignal(s string) (int, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q", s)
		}
		return n, nil
	}
	u := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, ok := signals[u]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("invalid signal %q", s)
}

// request is the interface as the sandbox layer takes it.
func (i InterfaceSpec) request() sandbox.InterfaceRequest {
	return sandbox.InterfaceRequest{IfName: i.Ifname, IP: i.IP, MAC: i.Mac, Gateway: i.Gateway, Bridge: i.Bridge, MTU: int(i.Mtu)}
}
