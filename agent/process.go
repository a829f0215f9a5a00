package agent

// process.go owns a process of a container (its main process or an exec):
// its record and output log, its stdio (pipes or a pty), its launch through
// the shim, its exit, resize and stdin.

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

type process struct {
	c       *container
	id      string
	spec    protocol.Process
	out     *output
	stdin   *os.File // pipe write end or pty master; nil when not open
	stdinMu sync.Mutex
	ptm     *os.File
	started time.Time
	// launched is closed once the start attempt finished (stdin is set)
	launched chan struct{}
	drained  chan struct{}
	reading  atomic.Bool // output readers were started (drained will close)
	done     chan struct{}
	status   protocol.ExitStatus
	once     sync.Once
}

// newProcess makes a process's record and its output log (logs/main.log,
// or logs/exec-ID.log).
func (c *container) newProcess(id string, spec protocol.Process) (*process, error) {
	name := "main"
	if id != "" {
		name = "exec-" + id
	}
	out, err := newOutput(filepath.Join(c.dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	return &process{c: c, id: id, spec: spec, out: out, done: make(chan struct{}), drained: make(chan struct{}), launched: make(chan struct{})}, nil
}

// launch creates the stdio of a process, hands it to the shim and waits
// for the shim's started/error reply. The main process object exists from
// add on, so attachers and logs may wait for its first byte before start.
func (c *container) launch(id string, spec protocol.Process) *protocol.Error {
	var p *process
	if id == "" {
		c.mu.Lock()
		p = c.procs[""]
		c.mu.Unlock()
	} else {
		var err error
		if p, err = c.newProcess(id, spec); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "%v", err)
		}
	}
	defer close(p.launched)
	perr := c.launchProcess(p)
	if perr != nil {
		p.exit(127, 0)
		if id != "" {
			c.mu.Lock()
			if c.procs[id] == p {
				delete(c.procs, id)
			}
			c.mu.Unlock()
			<-p.done
			p.out.remove()
		}
	}
	return perr
}

func (c *container) launchProcess(p *process) *protocol.Error {
	id, spec := p.id, p.spec
	// a tty process gets its pty from the shim (the container's own
	// devpts, see openContainerPty), the master comes back with "started";
	// other processes get pipes made here
	var child, readers []*os.File
	if !spec.Tty {
		var perr *protocol.Error
		if child, readers, perr = p.pipes(); perr != nil {
			return perr
		}
	}
	closeChild := func() {
		for _, f := range child {
			f.Close()
		}
	}
	reply := make(chan shimMsg, 1)
	c.mu.Lock()
	dup := id != "" && c.procs[id] != nil
	if dup || c.state == stateStopped {
		c.mu.Unlock()
		closeChild()
		for _, r := range readers {
			r.Close()
		}
		if dup {
			return protocol.Errorf(protocol.CodeConflict, "exec %s exists", id)
		}
		return protocol.Errorf(protocol.CodeConflict, "container %s is not running", c.id)
	}
	c.procs[id] = p
	c.pending[id] = reply
	// under c.mu: the shim's exit report (onShim takes c.mu) reads it
	p.started = time.Now()
	c.mu.Unlock()

	// from here an exit waits (briefly) for drained: readers are started
	// before the send for pipes, once the master arrived for a pty
	p.reading.Store(true)
	if !spec.Tty {
		p.readOutput(readers, false)
	}
	m := shimMsg{Op: "exec", ID: id, Proc: &spec}
	fds := make([]int, len(child))
	for i, f := range child {
		fds[i] = int(f.Fd())
	}
	c.shimW.Lock()
	err := errors.New("container exited")
	if c.shimFD >= 0 {
		err = sendShim(c.shimFD, m, fds...)
	}
	c.shimW.Unlock()
	closeChild()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		if spec.Tty {
			close(p.drained)
		}
		return protocol.Errorf(protocol.CodeInternal, "send to shim: %v", err)
	}
	r := <-reply
	if r.Op == "error" {
		if spec.Tty {
			close(p.drained)
		}
		return protocol.Errorf(protocol.CodeBadRequest, "start %s: %s", c.id, r.Err)
	}
	if spec.Tty {
		if len(r.fds) != 1 {
			closeFDs(r.fds)
			close(p.drained)
			// without its master the terminal hangs up: the process gets SIGHUP
			return protocol.Errorf(protocol.CodeInternal, "start %s: shim sent %d pty fds, want 1", c.id, len(r.fds))
		}
		// non-blocking: the runtime poller serves reads, and Close
		// interrupts a read that a background child keeps waiting
		unix.SetNonblock(r.fds[0], true)
		ptm := os.NewFile(uintptr(r.fds[0]), "ptmx")
		p.stdinMu.Lock()
		p.ptm = ptm
		if spec.OpenStdin {
			p.stdin = ptm
		}
		p.stdinMu.Unlock()
		p.readOutput([]*os.File{ptm}, true)
	}
	return nil
}

// pipes makes the stdio of a process without a tty: the child's ends and
// the agent's output read ends (stdout, stderr); stdin's write end is
// p.stdin when the process has open_stdin, else its stdin is /dev/null.
func (p *process) pipes() (child, readers []*os.File, perr *protocol.Error) {
	var in *os.File
	var err error
	if p.spec.OpenStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, protocol.Errorf(protocol.CodeInternal, "%v", err)
		}
		in, p.stdin = r, w
	} else if in, err = os.Open("/dev/null"); err != nil {
		return nil, nil, protocol.Errorf(protocol.CodeInternal, "%v", err)
	}
	or, ow, err := os.Pipe()
	if err != nil {
		in.Close()
		return nil, nil, protocol.Errorf(protocol.CodeInternal, "%v", err)
	}
	er, ew, err := os.Pipe()
	if err != nil {
		in.Close()
		or.Close()
		ow.Close()
		return nil, nil, protocol.Errorf(protocol.CodeInternal, "%v", err)
	}
	return []*os.File{in, ow, ew}, []*os.File{or, er}, nil
}

// readOutput copies readers (stdout, stderr; or the pty master) into the
// output records and closes drained when all ended. A pty master is closed
// by exit, not here (stdin and resize use it).
func (p *process) readOutput(readers []*os.File, pty bool) {
	var wg sync.WaitGroup
	for i, r := range readers {
		stream := byte(streamStdout)
		if i == 1 {
			stream = streamStderr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					p.out.write(stream, buf[:n])
				}
				if err != nil {
					break
				}
			}
			if !pty {
				r.Close()
			}
		}()
	}
	go func() {
		wg.Wait()
		close(p.drained)
	}()
}

func closeFDs(fds []int) {
	for _, f := range fds {
		unix.Close(f)
	}
}

// exit records the exit; the output is given up to 2s to drain (a
// background child may hold a pipe).
func (p *process) exit(code, sig int) {
	p.once.Do(func() {
		go func() {
			if p.reading.Load() {
				select {
				case <-p.drained:
				case <-time.After(2 * time.Second):
				}
			}
			p.out.finish()
			p.stdinMu.Lock()
			if p.ptm != nil {
				p.ptm.Close()
			}
			if p.stdin != nil && p.stdin != p.ptm {
				p.stdin.Close()
			}
			p.stdin = nil
			p.stdinMu.Unlock()
			p.status = protocol.ExitStatus{Code: code, Signal: sig, Started: p.started, Finished: time.Now()}
			close(p.done)
		}()
	})
}

func (p *process) wait() protocol.ExitStatus {
	<-p.done
	return p.status
}

func (p *process) resize(w, h int) *protocol.Error {
	if !p.spec.Tty {
		return protocol.Errorf(protocol.CodeConflict, "process has no tty")
	}
	if w <= 0 || h <= 0 || w > 65535 || h > 65535 {
		return protocol.Errorf(protocol.CodeBadRequest, "bad size %dx%d", w, h)
	}
	select {
	case <-p.done:
		return protocol.Errorf(protocol.CodeConflict, "process exited")
	default:
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.ptm == nil {
		return protocol.Errorf(protocol.CodeConflict, "process has no terminal yet (not started) or exited")
	}
	// not through Fd(), which would put the master back in blocking mode
	rc, err := p.ptm.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(w), Row: uint16(h)})
		})
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return protocol.Errorf(protocol.CodeInternal, "%v", err)
	}
	return nil
}

// feedStdin copies an attacher's stdin into the process; its EOF closes
// the process's stdin (for a tty: sends ^D).
func (p *process) feedStdin(c net.Conn) {
	defer c.Close()
	select {
	case <-p.launched:
	case <-p.done:
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.stdinMu.Lock()
			in := p.stdin
			p.stdinMu.Unlock()
			if in == nil {
				return
			}
			if _, werr := in.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				p.stdinMu.Lock()
				if p.stdin != nil {
					if p.stdin == p.ptm {
						p.stdin.Write([]byte{4})
					} else {
						p.stdin.Close()
						p.stdin = nil
					}
				}
				p.stdinMu.Unlock()
			}
			return
		}
	}
}
