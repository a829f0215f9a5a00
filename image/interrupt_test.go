package image

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A pull whose layer download is cut halfway leaves nothing visible: no blob, no
// image, no temp file; the next pull completes.
func TestInterruptedPull(t *testing.T) {
	reg := startRegistry(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	id := loadBusybox(t, s, "busybox")
	rec, _ := s.getRec(id)
	layer := rec.Layers[0].Digest
	if err := s.Push(ctx, "busybox", reg+"/cut/bb:1", nil, nil); err != nil {
		t.Fatal(err)
	}
	// A proxy that, while broken, sends half of the layer blob then drops the connection.
	var broken atomic.Bool
	broken.Store(true)
	var cuts atomic.Int32
	target, _ := url.Parse("http://" + reg)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if broken.Load() && strings.Contains(resp.Request.URL.Path, "/blobs/"+layer) && resp.StatusCode == 200 {
			cuts.Add(1)
			resp.Body = &cutReader{r: resp.Body, left: rec.Layers[0].Size / 2}
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	defer srv.Close()
	proxied := ln.Addr().String() + "/cut/bb:1"

	s2 := openStore(t)
	_, err = s2.Pull(ctx, proxied, nil, nil)
	if err == nil || cuts.Load() == 0 {
		t.Fatalf("pull through a cutting proxy = %v (cuts %d)", err, cuts.Load())
	}
	if s2.hasBlob(layer) {
		t.Error("half-pulled layer blob is visible")
	}
	if _, err := s2.Get(proxied); !errors.Is(err, ErrNotFound) {
		t.Errorf("image registered after a failed pull: %v", err)
	}
	if ents, _ := os.ReadDir(s2.tmpDir()); len(ents) != 0 {
		t.Errorf("temp files left: %d", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(s2.Root(), "blobs", "sha256")); len(ents) != 0 {
		t.Errorf("blobs left after a failed pull: %d", len(ents))
	}
	broken.Store(false)
	im, err := s2.Pull(ctx, proxied, nil, nil)
	if err != nil || im.ID != id {
		t.Fatalf("pull after repair = %s, %v", im.ID, err)
	}
	// A cancelled context stops a pull with the context's error.
	s3 := openStore(t)
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := s3.Pull(cctx, proxied, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("pull with a cancelled context = %v", err)
	}
}

type cutReader struct {
	r    io.ReadCloser
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }
