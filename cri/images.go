// This file owns the ImageService: PullImage, ListImages, ImageStatus,
// RemoveImage and ImageFsInfo over the daemon's image store.

package cri

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image is a stored image as the CRI reports it.
type Image struct {
	ID          string // sha256:<hex> of the config
	RepoTags    []string
	RepoDigests []string
	Size        uint64
	User        string // the image config's User ("" = root)
}

// Auth is a registry credential of a PullImage request.
type Auth struct {
	Username, Password, Auth, ServerAddress, IdentityToken, RegistryToken string
}

// FsUsage is what the image store's file system holds.
type FsUsage struct {
	Mountpoint string
	UsedBytes  uint64
	Inodes     uint64
}

// ErrImageNotFound is what Images returns (wrapped) for an unknown image.
var ErrImageNotFound = errors.New("image not found")

// Images is the image store as the CRI uses it (cmd/hyperd adapts
// package image to it; pulls go through the registry mirrors).
type Images interface {
	List() ([]Image, error)
	// Status finds an image by reference or id.
	Status(ref string) (Image, error)
	Pull(ctx context.Context, ref string, auth *Auth) (Image, error)
	// Remove untags ref (or deletes the image id ref) and deletes what no
	// tag holds any more.
	Remove(ref string) error
	FsUsage() (FsUsage, error)
}

func (s *Server) images() (Images, error) {
	if s.img == nil {
		return nil, status.Error(codes.Unimplemented, "this hyperd has no image store")
	}
	return s.img, nil
}

func criImage(im Image) *runtimeapi.Image {
	out := &runtimeapi.Image{Id: im.ID, RepoTags: im.RepoTags, RepoDigests: im.RepoDigests, Size: im.Size,
		Spec: &runtimeapi.ImageSpec{Image: im.ID}}
	if out.RepoTags == nil {
		out.RepoTags = []string{}
	}
	if out.RepoDigests == nil {
		out.RepoDigests = []string{}
	}
	u, _, _ := strings.Cut(im.User, ":")
	if n, err := strconv.ParseInt(u, 10, 64); err == nil {
		out.Uid = &runtimeapi.Int64Value{Value: n}
	} else if u != "" {
		out.Username = u
	}
	return out
}

// ListImages lists the stored images (filter: one image reference).
func (s *Server) ListImages(ctx context.Context, r *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	st, err := s.images()
	if err != nil {
		return nil, err
	}
	if ref := r.GetFilter().GetImage().GetImage(); ref != "" {
		im, err := st.Status(ref)
		if errors.Is(err, ErrImageNotFound) {
			return &runtimeapi.ListImagesResponse{}, nil
		} else if err != nil {
			return nil, grpcErr(err)
		}
		return &runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{criImage(im)}}, nil
	}
	l, err := st.List()
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, im := range l {
		resp.Images = append(resp.Images, criImage(im))
	}
	return resp, nil
}

// ImageStatus reports one image; an unknown image is a nil image, not an
// error (the CRI's contract).
func (s *Server) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	st, err := s.images()
	if err != nil {
		return nil, err
	}
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	im, err := st.Status(ref)
	if errors.Is(err, ErrImageNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	} else if err != nil {
		return nil, grpcErr(err)
	}
	return &runtimeapi.ImageStatusResponse{Image: criImage(im)}, nil
}

// PullImage pulls an image (through the registry mirrors) and returns its id.
func (s *Server) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	st, err := s.images()
	if err != nil {
		return nil, err
	}
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	var auth *Auth
	if a := r.GetAuth(); a != nil {
		auth = &Auth{Username: a.Username, Password: a.Password, Auth: a.Auth, ServerAddress: a.ServerAddress,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	}
	start := time.Now()
	im, err := st.Pull(ctx, ref, auth)
	if err != nil {
		if errors.Is(err, ErrImageNotFound) {
			return nil, status.Errorf(codes.NotFound, "pull %s: %v", ref, err)
		}
		return nil, grpcErr(err)
	}
	s.log.Info("cri: image pulled", "image", ref, "id", im.ID, "took", time.Since(start).Round(time.Millisecond))
	return &runtimeapi.PullImageResponse{ImageRef: im.ID}, nil
}

// RemoveImage removes an image; an unknown image is not an error.
func (s *Server) RemoveImage(ctx context.Context, r *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	st, err := s.images()
	if err != nil {
		return nil, err
	}
	ref := r.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	if err := st.Remove(ref); err != nil && !errors.Is(err, ErrImageNotFound) {
		return nil, grpcErr(err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the image store's usage.
func (s *Server) ImageFsInfo(ctx context.Context, r *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	st, err := s.images()
	if err != nil {
		return nil, err
	}
	u, err := st.FsUsage()
	if err != nil {
		return nil, grpcErr(err)
	}
	fs := &runtimeapi.FilesystemUsage{Timestamp: time.Now().UnixNano(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: u.Mountpoint},
		UsedBytes: &runtimeapi.UInt64Value{Value: u.UsedBytes}, InodesUsed: &runtimeapi.UInt64Value{Value: u.Inodes}}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{fs}}, nil
}
