// Package podtest provides an in-memory sandbox.Driver and image store for
// tests of the daemon core and the API (like net/http/httptest). Nothing in
// hyperd uses it; it is not a driver.
//
// A "process" is simulated from its argv:
//
//	echo ARGS...   prints ARGS and exits 0
//	err ARGS...    prints ARGS to stderr and exits 1
//	cat            copies stdin to stdout, exits 0 at stdin EOF
//	sleep          runs until signalled (exit 128+signal)
//	exit N         exits with N
//
// anything else exits 127. Dial reaches an echo server on any port.
package podtest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// Driver is the fake driver. Sandboxes survive a daemon's Close (like a
// real agent process would), so Reattach finds them.
type Driver struct {
	mu        sync.Mutex
	sandboxes map[string]*Sandbox
	n         int
	// FailCreate makes Create fail with this error.
	FailCreate error
	hook       func(call, id string)
}

// SetHook makes every sandbox's AddContainer, StartContainer and
// RemoveContainer call f(call, container id) first: a test can hold an
// operation inside its sandbox call (f blocks) while another one runs.
func (d *Driver) SetHook(f func(call, id string)) {
	d.mu.Lock()
	d.hook = f
	d.mu.Unlock()
}

func (d *Driver) callHook(call, id string) {
	d.mu.Lock()
	f := d.hook
	d.mu.Unlock()
	if f != nil {
		f(call, id)
	}
}

// NewDriver returns an empty fake driver.
func NewDriver() *Driver { return &Driver{sandboxes: map[string]*Sandbox{}} }

func (d *Driver) Name() string      { return "fake" }
func (d *Driver) Isolation() string { return "none (test double)" }

func (d *Driver) Create(ctx context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.FailCreate != nil {
		return nil, d.FailCreate
	}
	d.n++
	s := &Sandbox{drv: d, id: fmt.Sprintf("%s-%d", cfg.ID, d.n), cfg: cfg, done: make(chan struct{}), procs: map[string]*proc{}, ctrs: map[string]sandbox.ContainerSpec{}}
	d.sandboxes[s.id] = s
	return s, nil
}

func (d *Driver) Reattach(ctx context.Context, h sandbox.Handle) (sandbox.Sandbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sandboxes[h.ID]
	if !ok {
		return nil, fmt.Errorf("sandbox %s is gone", h.ID)
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("sandbox %s exited: %v", h.ID, s.err)
	default:
	}
	return s, nil
}

// Kill makes a sandbox die as if its VM crashed.
func (d *Driver) Kill(id string) { d.KillWith(id, errors.New("killed by test")) }

// KillWith makes a sandbox die with err as its Err (e.g. a
// *sandbox.ExitError saying the guest panicked).
func (d *Driver) KillWith(id string, err error) {
	d.mu.Lock()
	s := d.sandboxes[id]
	delete(d.sandboxes, id)
	d.mu.Unlock()
	if s != nil {
		s.die(err)
	}
}

// Running lists live sandbox ids.
func (d *Driver) Running() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, s := range d.sandboxes {
		select {
		case <-s.done:
		default:
			out = append(out, id)
		}
	}
	return out
}

// Sandbox is one fake sandbox; it is also its own Agent.
type Sandbox struct {
	drv  *Driver
	id   string
	cfg  sandbox.Config
	done chan struct{}
	err  error
	once sync.Once

	mu    sync.Mutex
	ctrs  map[string]sandbox.ContainerSpec
	procs map[string]*proc // key cid or cid/execid
}

func (s *Sandbox) ID() string { return s.id }
func (s *Sandbox) Handle() sandbox.Handle {
	return sandbox.Handle{Driver: "fake", ID: s.id, Data: map[string]string{"pod": s.cfg.ID}}
}
func (s *Sandbox) Agent() sandbox.Agent                { return s }
func (s *Sandbox) DiskSource(p string) (string, error) { return p, nil }
func (s *Sandbox) Done() <-chan struct{}               { return s.done }
func (s *Sandbox) Err() error                          { return s.err }
func (s *Sandbox) HostStats() (sandbox.HostStats, error) {
	return sandbox.HostStats{RSSBytes: 1 << 20}, nil
}
func (s *Sandbox) Version(context.Context) (string, error)     { return "fake", nil }
func (s *Sandbox) Ping(context.Context) (time.Duration, error) { return 0, nil }
func (s *Sandbox) Close() error                                { return nil }
func (s *Sandbox) Shutdown(ctx context.Context) error          { return s.Stop(ctx) }

// Setup accepts any pod setup: the fake has no guest to configure.
func (s *Sandbox) Setup(context.Context, protocol.PodSetup) error { return nil }

func (s *Sandbox) die(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done) // dead before its processes are seen to end, like a VM
		s.mu.Lock()
		for _, p := range s.procs {
			p.exit(137, 9)
		}
		s.mu.Unlock()
	})
}

func (s *Sandbox) Stop(ctx context.Context) error {
	s.die(nil)
	return nil
}

func (s *Sandbox) alive() error {
	select {
	case <-s.done:
		return errors.New("sandbox stopped")
	default:
		return nil
	}
}

func key(cid, eid string) string {
	if eid == "" {
		return cid
	}
	return cid + "/" + eid
}

func (s *Sandbox) AddContainer(ctx context.Context, spec sandbox.ContainerSpec) error {
	s.drv.callHook("AddContainer", spec.ID)
	if err := s.alive(); err != nil {
		return err
	}
	if _, err := os.Stat(spec.Rootfs); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ctrs[spec.ID]; ok {
		return fmt.Errorf("container %s exists", spec.ID)
	}
	s.ctrs[spec.ID] = spec
	s.procs[spec.ID] = newProc(spec.Process)
	return nil
}

func (s *Sandbox) RemoveContainer(ctx context.Context, id string) error {
	s.drv.callHook("RemoveContainer", id)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ctrs, id)
	delete(s.procs, id)
	return nil
}

func (s *Sandbox) getProc(cid, eid string) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[key(cid, eid)]
	if !ok {
		return nil, fmt.Errorf("no process %s", key(cid, eid))
	}
	return p, nil
}

func (s *Sandbox) StartContainer(ctx context.Context, id string) error {
	s.drv.callHook("StartContainer", id)
	p, err := s.getProc(id, "")
	if err != nil {
		return err
	}
	p.start()
	return nil
}

func (s *Sandbox) Exec(ctx context.Context, cid, eid string, pr sandbox.Process) error {
	if err := s.alive(); err != nil {
		return err
	}
	s.mu.Lock()
	if _, ok := s.ctrs[cid]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("no container %s", cid)
	}
	p := newProc(pr)
	s.procs[key(cid, eid)] = p
	s.mu.Unlock()
	p.start()
	return nil
}

func (s *Sandbox) Signal(ctx context.Context, cid, eid string, sig int) error {
	p, err := s.getProc(cid, eid)
	if err != nil {
		return err
	}
	p.signal(sig)
	return nil
}

func (s *Sandbox) Wait(ctx context.Context, cid, eid string) (sandbox.ExitStatus, error) {
	p, err := s.getProc(cid, eid)
	if err != nil {
		return sandbox.ExitStatus{}, err
	}
	select {
	case <-p.exited:
		return p.status, nil
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

func (s *Sandbox) Resize(ctx context.Context, cid, eid string, w, h int) error {
	p, err := s.getProc(cid, eid)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.w, p.h = w, h
	p.mu.Unlock()
	return nil
}

// Size returns the last tty size set on a process.
func (s *Sandbox) Size(cid, eid string) (int, int) {
	p, err := s.getProc(cid, eid)
	if err != nil {
		return 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w, p.h
}

func (s *Sandbox) Attach(ctx context.Context, cid, eid string, stdin bool) (sandbox.Stdio, error) {
	p, err := s.getProc(cid, eid)
	if err != nil {
		return sandbox.Stdio{}, err
	}
	st := sandbox.Stdio{Stdout: p.reader("stdout", p.tty)}
	if !p.tty {
		st.Stderr = p.reader("stderr", false)
	}
	if stdin {
		st.Stdin = &stdinWriter{p: p}
	}
	return st, nil
}

func (s *Sandbox) Logs(ctx context.Context, cid string, opt sandbox.LogOptions) (sandbox.LogReader, error) {
	p, err := s.getProc(cid, "")
	if err != nil {
		return nil, err
	}
	return &logReader{p: p, follow: opt.Follow, ctx: ctx}, nil
}

func (s *Sandbox) Stats(ctx context.Context) (sandbox.PodStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := sandbox.PodStats{Time: time.Now(), CPUCount: 1, MemTotal: 128 << 20}
	for id := range s.ctrs {
		ps.Containers = append(ps.Containers, sandbox.ContainerStats{ID: id, CPUUsageNS: 1000, MemoryUsage: 4096, Pids: 1})
	}
	return ps, nil
}

func (s *Sandbox) Dial(ctx context.Context, network string, port int) (net.Conn, error) {
	if err := s.alive(); err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		buf := make([]byte, 65536)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			if _, err := b.Write([]byte(fmt.Sprintf("%s/%d:%s", network, port, buf[:n]))); err != nil {
				return
			}
		}
	}()
	return a, nil
}

func (s *Sandbox) Commit(ctx context.Context, cid string) (io.ReadCloser, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "committed", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("hi"))
	tw.Close()
	return io.NopCloser(&buf), nil
}

// --- simulated process ---

type rec struct {
	stream string
	t      time.Time
	data   []byte
}

type proc struct {
	args []string
	tty  bool

	mu       sync.Mutex
	cond     *sync.Cond
	out      []rec
	started  bool
	done     bool
	sig      chan int
	stdin    chan []byte
	stdinEOF bool
	exited   chan struct{}
	status   sandbox.ExitStatus
	w, h     int
}

func newProc(p sandbox.Process) *proc {
	pr := &proc{args: p.Args, tty: p.Tty, sig: make(chan int, 4), stdin: make(chan []byte, 64), exited: make(chan struct{})}
	pr.cond = sync.NewCond(&pr.mu)
	return pr
}

func (p *proc) emit(stream string, b []byte) {
	p.mu.Lock()
	if p.tty {
		stream = "stdout"
	}
	p.out = append(p.out, rec{stream, time.Now(), append([]byte(nil), b...)})
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *proc) exit(code, sig int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	p.status = sandbox.ExitStatus{Code: code, Signal: sig, Finished: time.Now()}
	close(p.exited)
	p.cond.Broadcast()
}

func (p *proc) signal(sig int) {
	select {
	case p.sig <- sig:
	default:
	}
}

func (p *proc) start() {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return
	}
	p.started = true
	p.mu.Unlock()
	go p.run()
}

func (p *proc) run() {
	if len(p.args) == 0 {
		p.exit(127, 0)
		return
	}
	if (p.args[0] == "/bin/sh" || p.args[0] == "sh") && len(p.args) > 2 && p.args[1] == "-c" {
		p.args = strings.Fields(strings.TrimPrefix(p.args[2], "exec "))
		if len(p.args) == 0 {
			p.exit(0, 0)
			return
		}
	}
	rest := strings.Join(p.args[1:], " ")
	switch p.args[0] {
	case "echo":
		p.emit("stdout", []byte(rest+"\n"))
		p.exit(0, 0)
	case "err":
		p.emit("stderr", []byte(rest+"\n"))
		p.exit(1, 0)
	case "exit":
		n, _ := strconv.Atoi(rest)
		p.exit(n, 0)
	case "cat":
		for {
			select {
			case b, ok := <-p.stdin:
				if !ok {
					p.exit(0, 0)
					return
				}
				p.emit("stdout", b)
			case s := <-p.sig:
				p.exit(128+s, s)
				return
			}
		}
	case "sleep":
		if rest != "" && rest != "2147483647" {
			p.emit("stdout", []byte(rest+"\n"))
		}
		s := <-p.sig
		p.exit(128+s, s)
	default:
		p.emit("stderr", []byte(p.args[0]+": not found\n"))
		p.exit(127, 0)
	}
}

type stdinWriter struct {
	p    *proc
	once sync.Once
}

func (w *stdinWriter) Write(b []byte) (int, error) {
	select {
	case w.p.stdin <- append([]byte(nil), b...):
		return len(b), nil
	case <-w.p.exited:
		return 0, io.ErrClosedPipe
	}
}

func (w *stdinWriter) Close() error {
	w.once.Do(func() {
		w.p.mu.Lock()
		if !w.p.stdinEOF {
			w.p.stdinEOF = true
			close(w.p.stdin)
		}
		w.p.mu.Unlock()
	})
	return nil
}

// reader streams one stream of the process from its first byte.
func (p *proc) reader(stream string, all bool) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		i := 0
		for {
			p.mu.Lock()
			for i >= len(p.out) && !p.done {
				p.cond.Wait()
			}
			if i >= len(p.out) && p.done {
				p.mu.Unlock()
				pw.Close()
				return
			}
			r := p.out[i]
			i++
			p.mu.Unlock()
			if !all && r.stream != stream {
				continue
			}
			if _, err := pw.Write(r.data); err != nil {
				return
			}
		}
	}()
	return pr
}

type logReader struct {
	p      *proc
	i      int
	follow bool
	ctx    context.Context
	closed bool
}

func (l *logReader) Next() (sandbox.LogRecord, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	for l.i >= len(l.p.out) && !l.p.done && l.follow && !l.closed {
		l.p.cond.Wait()
	}
	if l.closed {
		return sandbox.LogRecord{}, io.EOF
	}
	if l.i >= len(l.p.out) {
		return sandbox.LogRecord{}, io.EOF
	}
	r := l.p.out[l.i]
	l.i++
	return sandbox.LogRecord{Stream: r.stream, Time: r.t, Data: r.data}, nil
}

func (l *logReader) Close() error {
	l.p.mu.Lock()
	l.closed = true
	l.p.cond.Broadcast()
	l.p.mu.Unlock()
	return nil
}

// Images is a fake image store with fixed images:
// "busybox" (CMD echo hello), "sleeper" (CMD sleep), "nocmd" (no CMD).
type Images struct {
	Root string
	mu   sync.Mutex
	// Commits records commit calls.
	Commits   []pod.CommitOptions
	committed map[string]pod.ImageRef
}

func (im *Images) Resolve(ref string) (pod.ImageRef, error) {
	im.mu.Lock()
	if r, ok := im.committed[ref]; ok {
		im.mu.Unlock()
		return r, nil
	}
	im.mu.Unlock()
	switch strings.TrimSuffix(ref, ":latest") {
	case "busybox", "sha256:b0b0":
		return pod.ImageRef{ID: "sha256:b0b0", RepoTags: []string{"busybox:latest"}, Config: pod.ImageConfig{Cmd: []string{"echo", "hello"}, Env: []string{"PATH=/bin"}}}, nil
	case "sleeper", "sha256:5ee9":
		return pod.ImageRef{ID: "sha256:5ee9", RepoTags: []string{"sleeper:latest"}, Config: pod.ImageConfig{Cmd: []string{"sleep"}}}, nil
	case "nocmd", "sha256:0c0d":
		return pod.ImageRef{ID: "sha256:0c0d", RepoTags: []string{"nocmd:latest"}}, nil
	}
	return pod.ImageRef{}, fmt.Errorf("%s: %w", ref, pod.ErrImageNotFound)
}

func (im *Images) RootfsDir(ctx context.Context, id string) (string, error) { return im.Root, nil }
func (im *Images) DiskImage(ctx context.Context, id string) (string, string, error) {
	return "", "", errors.New("no disk images in the fake store")
}

func (im *Images) Commit(ctx context.Context, parent string, layer io.Reader, opt pod.CommitOptions) (string, error) {
	tr := tar.NewReader(layer)
	if _, err := tr.Next(); err != nil && err != io.EOF {
		return "", fmt.Errorf("layer: %w", err)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	im.Commits = append(im.Commits, opt)
	id := fmt.Sprintf("sha256:c0ff%d", len(im.Commits))
	if im.committed == nil {
		im.committed = map[string]pod.ImageRef{}
	}
	r := pod.ImageRef{ID: id}
	if opt.Config != nil {
		r.Config = *opt.Config
	}
	im.committed[id] = r
	if opt.Repo != "" {
		im.committed[opt.Repo+":"+opt.Tag] = r
	}
	return id, nil
}
