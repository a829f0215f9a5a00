// This file owns the streamed list calls (StreamPodSandboxes,
// StreamContainers, StreamImages, StreamContainerStats,
// StreamPodSandboxStats; the kubelet's CRIListStreaming): the same items
// as the List calls, in messages of at most streamChunk items (none for an
// empty list), then the end of the stream.

package cri

import (
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamChunk is how many items one message of a streamed list holds.
const streamChunk = 100

// sendChunks sends items in chunks of streamChunk through send.
func sendChunks[T any](items []T, send func([]T) error) error {
	for len(items) > 0 {
		n := min(len(items), streamChunk)
		if err := send(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// StreamPodSandboxes streams what ListPodSandbox lists.
func (s *Server) StreamPodSandboxes(r *runtimeapi.StreamPodSandboxesRequest, st grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	l, err := s.ListPodSandbox(st.Context(), &runtimeapi.ListPodSandboxRequest{Filter: r.Filter})
	if err != nil {
		return err
	}
	return sendChunks(l.Items, func(c []*runtimeapi.PodSandbox) error {
		return st.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: c})
	})
}

// StreamContainers streams what ListContainers lists.
func (s *Server) StreamContainers(r *runtimeapi.StreamContainersRequest, st grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	l, err := s.ListContainers(st.Context(), &runtimeapi.ListContainersRequest{Filter: r.Filter})
	if err != nil {
		return err
	}
	return sendChunks(l.Containers, func(c []*runtimeapi.Container) error {
		return st.Send(&runtimeapi.StreamContainersResponse{Containers: c})
	})
}

// StreamImages streams what ListImages lists.
func (s *Server) StreamImages(r *runtimeapi.StreamImagesRequest, st grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	l, err := s.ListImages(st.Context(), &runtimeapi.ListImagesRequest{Filter: r.Filter})
	if err != nil {
		return err
	}
	return sendChunks(l.Images, func(c []*runtimeapi.Image) error {
		return st.Send(&runtimeapi.StreamImagesResponse{Images: c})
	})
}

// StreamContainerStats streams what ListContainerStats lists.
func (s *Server) StreamContainerStats(r *runtimeapi.StreamContainerStatsRequest, st grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	l, err := s.ListContainerStats(st.Context(), &runtimeapi.ListContainerStatsRequest{Filter: r.Filter})
	if err != nil {
		return err
	}
	return sendChunks(l.Stats, func(c []*runtimeapi.ContainerStats) error {
		return st.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: c})
	})
}

// StreamPodSandboxStats streams what ListPodSandboxStats lists.
func (s *Server) StreamPodSandboxStats(r *runtimeapi.StreamPodSandboxStatsRequest, st grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	l, err := s.ListPodSandboxStats(st.Context(), &runtimeapi.ListPodSandboxStatsRequest{Filter: r.Filter})
	if err != nil {
		return err
	}
	return sendChunks(l.Stats, func(c []*runtimeapi.PodSandboxStats) error {
		return st.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: c})
	})
}
