// This file owns persistence: the records (PodRecord, ContainerRecord,
// ExecRecord, LogIndex), the bbolt store under the data root, and the save
// helpers the daemon writes records with.

package pod

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
	bolt "go.etcd.io/bbolt"
)

// PodRecord is a pod as persisted in bbolt.
type PodRecord struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Spec         PodSpec           `json:"spec"`
	VMID         string            `json:"vmId"`
	State        string            `json:"state"`
	Phase        string            `json:"phase"` // Pending|Running|Paused|Succeeded|Failed
	Reason       string            `json:"reason,omitempty"`
	Message      string            `json:"message,omitempty"`
	Created      time.Time         `json:"created"`
	Started      time.Time         `json:"started,omitempty"`
	Finished     time.Time         `json:"finished,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	PortMappings []PortMapping     `json:"portMappings,omitempty"`
	Containers   []string          `json:"containers"`
	Handle       *sandbox.Handle   `json:"handle,omitempty"`
	// SandboxKept: the pod was stopped with stopVM=no; its sandbox (Handle)
	// idles, without containers, for the next start.
	SandboxKept bool   `json:"sandboxKept,omitempty"`
	Driver      string `json:"driver,omitempty"`
	Isolation   string `json:"isolation,omitempty"`
	// Boot is how the pod's last sandbox started ("cold", "template
	// <name>"), as its driver said; kept after the sandbox ends.
	Boot string `json:"boot,omitempty"`
}

// ContainerRecord is a container as persisted in bbolt.
type ContainerRecord struct {
	ID           string        `json:"id"`
	Name         string        `json:"name"`
	PodID        string        `json:"podId"`
	Spec         ContainerSpec `json:"spec"`
	Image        string        `json:"image"`
	ImageID      string        `json:"imageId"`
	Args         []string      `json:"args"`
	Env          []string      `json:"env"`
	Workdir      string        `json:"workdir"`
	User         string        `json:"user"`
	StopSignal   int           `json:"stopSignal"`
	Phase        string        `json:"phase"`
	Created      time.Time     `json:"created"`
	Started      time.Time     `json:"started,omitempty"`
	Finished     time.Time     `json:"finished,omitempty"`
	Exited       bool          `json:"exited"`
	ExitCode     int           `json:"exitCode"`
	Reason       string        `json:"reason,omitempty"`
	Message      string        `json:"message,omitempty"`
	RestartCount int           `json:"restartCount"`
	// InSandbox: added to the pod's current sandbox (AddContainer done).
	InSandbox bool `json:"inSandbox"`
}

// ExecRecord is an exec as persisted in bbolt.
type ExecRecord struct {
	ID          string    `json:"id"`
	ContainerID string    `json:"containerId"`
	PodID       string    `json:"podId"`
	Cmd         []string  `json:"cmd"`
	Tty         bool      `json:"tty"`
	Started     bool      `json:"started"`
	Exited      bool      `json:"exited"`
	ExitCode    int       `json:"exitCode"`
	Created     time.Time `json:"created"`
	Reason      string    `json:"reason,omitempty"`
}

// LogIndex locates a container's persisted log.
type LogIndex struct {
	ContainerID string    `json:"containerId"`
	Path        string    `json:"path"`
	Size        int64     `json:"size"`
	Records     int64     `json:"records"`
	Last        time.Time `json:"last"` // time of the last record persisted
}

var (
	bPods       = []byte("pods")
	bContainers = []byte("containers")
	bExecs      = []byte("execs")
	bLogs       = []byte("logs")
)

// store is the bbolt state. Every record is JSON under its id.
type store struct{ db *bolt.DB }

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bPods, bContainers, bExecs, bLogs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(id), data) })
}

func (s *store) del(bucket []byte, ids ...string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

func loadAll[T any](s *store, bucket []byte) ([]T, error) {
	var out []T
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var t T
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("record %s/%s: %w", bucket, k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// savePod, saveCtr and saveExec write a record; a failure is logged (the
// in-memory state stays authoritative). Caller holds d.mu.
func (d *Daemon) savePod(p *podState) {
	if err := d.st.put(bPods, p.rec.ID, &p.rec); err != nil {
		d.log.Error("persist pod", "pod", p.rec.ID, "err", err)
	}
}

func (d *Daemon) saveCtr(c *ctrState) {
	if err := d.st.put(bContainers, c.rec.ID, &c.rec); err != nil {
		d.log.Error("persist container", "container", c.rec.ID, "err", err)
	}
}

func (d *Daemon) saveExec(e *execState) {
	if err := d.st.put(bExecs, e.rec.ID, &e.rec); err != nil {
		d.log.Error("persist exec", "exec", e.rec.ID, "err", err)
	}
}
