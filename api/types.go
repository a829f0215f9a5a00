package api

import (
	"context"
	"encoding/json"
	"io"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
)

// Wire types shared by the server and api/client.

// ErrorResponse is every error body.
type ErrorResponse struct {
	Message string `json:"message"`
}

// PodResult answers mutating pod calls, as the original did.
type PodResult struct {
	ID    string `json:"ID"`
	Code  int    `json:"Code"`
	Cause string `json:"Cause"`
}

// ListResult answers GET /list.
type ListResult struct {
	Item     string   `json:"item"`
	PodData  []string `json:"podData,omitempty"`
	CData    []string `json:"cData,omitempty"`
	VMData   []string `json:"vmData,omitempty"`
	ImageIDs []string `json:"-"`
}

// ImagesList answers GET /images/get.
type ImagesList struct {
	ImagesList []string `json:"imagesList"`
}

// RemoveItem is one line of DELETE /image's answer (original spelling "untaged").
type RemoveItem struct {
	Untagged string `json:"untaged,omitempty"`
	Deleted  string `json:"deleted,omitempty"`
}

// RemoveResult answers DELETE /image.
type RemoveResult struct {
	ImagesList []RemoveItem `json:"imagesList"`
}

// PortMappingList answers GET /pod/{id}/portmappings.
type PortMappingList struct {
	PortMappings []PortMapping `json:"portMappings"`
}

// PortMapping as on the wire (ports are strings).
type PortMapping struct {
	ContainerPort string `json:"containerPort"`
	HostPort      string `json:"hostPort"`
	Protocol      string `json:"protocol"`
}

// PortMappingOf is the daemon's port mapping as on the wire.
func PortMappingOf(pm pod.PortMapping) PortMapping {
	return PortMapping{ContainerPort: string(pm.ContainerPort), HostPort: string(pm.HostPort), Protocol: pm.Protocol}
}

// SplitRepoTag splits an image reference's tag off (a ':' after the last
// '/', so a registry's port stays in repo); tag is "" if there is none.
func SplitRepoTag(ref string) (repo, tag string) {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// AuthConfig is Docker's registry auth object (X-Registry-Auth, /auth body).
type AuthConfig struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	Email         string `json:"email,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// AuthResult answers POST /auth.
type AuthResult struct {
	Status string `json:"Status"`
}

// JSONMessage is one line of a pull/push/build/load progress stream (Docker's).
type JSONMessage struct {
	Status         string          `json:"status,omitempty"`
	ID             string          `json:"id,omitempty"`
	Progress       string          `json:"progress,omitempty"`
	ProgressDetail *ProgressDetail `json:"progressDetail,omitempty"`
	Stream         string          `json:"stream,omitempty"`
	Error          string          `json:"error,omitempty"`
	ErrorDetail    *ErrorDetail    `json:"errorDetail,omitempty"`
	// Aux carries a result, as in Docker: {"ID": "sha256:..."} at the end of a build.
	Aux json.RawMessage `json:"aux,omitempty"`
}

// BuildResult is the aux message of a successful build.
type BuildResult struct {
	ID string `json:"ID"`
}

type ProgressDetail struct {
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
}

type ErrorDetail struct {
	Message string `json:"message"`
}

// VersionInfo answers GET /version.
type VersionInfo struct {
	Version    string `json:"Version"`
	APIVersion string `json:"ApiVersion"`
	GoVersion  string `json:"GoVersion"`
	Os         string `json:"Os"`
	Arch       string `json:"Arch"`
	Driver     string `json:"Driver"`
}

// Info answers GET /info.
type Info struct {
	ID              string     `json:"ID"`
	Containers      int        `json:"Containers"`
	Images          int        `json:"Images"`
	Driver          string     `json:"Driver"`
	DriverStatus    [][]string `json:"DriverStatus"`
	MemTotal        int64      `json:"MemTotal"`
	Pods            int        `json:"Pods"`
	OperatingSystem string     `json:"Operating System"`
	Name            string     `json:"Name"`
	DockerRootDir   string     `json:"DockerRootDir"`
	// Extensions
	SandboxDriver string `json:"SandboxDriver"`
	Isolation     string `json:"Isolation"`
	Warning       string `json:"Warning,omitempty"`
	RunningPods   int    `json:"RunningPods"`
}

// ImageSummary is one local image.
type ImageSummary struct {
	ID       string
	RepoTags []string
	Created  int64 // unix seconds
	Size     int64
}

// Progress is one progress event of pull/push/load.
type Progress struct {
	Status, ID, Progress string
	Current, Total       int64
	Error                string
}

// BuildOptions are POST /image/build's parameters for the image store's
// builder (rm and forcerm choose the daemon's step runner instead).
type BuildOptions struct {
	Dockerfile string
	Tags       []string
	BuildArgs  map[string]string
	NoCache    bool
	Pull       bool
	Quiet      bool
	// Auths is X-Registry-Config (credentials per registry) for FROM pulls.
	Auths map[string]AuthConfig
}

// ImageService is the API's view of the image store. cmd/hyperd adapts
// image.Store to it; errors should wrap pod.NotFoundError / ConflictError /
// SpecError so the API can pick the status code.
type ImageService interface {
	List(all bool) ([]ImageSummary, error)
	Pull(ctx context.Context, ref string, auth *AuthConfig, progress func(Progress)) error
	Push(ctx context.Context, ref, remote string, auth *AuthConfig, progress func(Progress)) error
	Remove(ref string, force, noprune bool, inUse func(id string) bool) ([]RemoveItem, error)
	Load(ctx context.Context, r io.Reader) ([]string, error)
	Save(ctx context.Context, w io.Writer, refs []string) error
	// CheckAuth verifies credentials against auth.ServerAddress's registry.
	CheckAuth(ctx context.Context, auth AuthConfig) (string, error)
	// SaveAuth stores credentials that CheckAuth accepted, in the daemon's
	// state: later pulls, pushes and FROM pulls of that registry without
	// X-Registry-Auth use them.
	SaveAuth(auth AuthConfig) error
	// Build builds a Dockerfile from a tar context; RUN steps go to run
	// (the daemon's pod runner), the build output to out, FROM pull progress
	// to progress. It returns the image id.
	Build(ctx context.Context, buildContext io.Reader, opt BuildOptions, run pod.BuildRunFunc, out io.Writer, progress func(Progress)) (string, error)
}
