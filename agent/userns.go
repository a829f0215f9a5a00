// This file owns the agent's side of containers in a user namespace (the
// local driver's, internal/userns): layers and volumes attached through
// idmapped copies, and the pod network sysctls an unprivileged container
// root needs. A VM needs none of this: the kvm driver's guest agent runs
// without it.

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hyperhq/hyperd-go/internal/userns"
	"golang.org/x/sys/unix"
)

// newUserns opens the containers' user namespace with mapping m and checks
// that the state directory can be idmapped with it.
func newUserns(m userns.Map, dir string) (*userns.NS, error) {
	n, err := userns.New(m, "/proc/self/exe")
	if err != nil {
		return nil, err
	}
	if err := n.Probe(dir); err != nil {
		n.Close()
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	return n, nil
}

// bindIdmapped mounts src's idmapped copy (n's mapping) at dest resolved
// inside root (a file when file), in the calling thread's mount namespace.
func bindIdmapped(n *userns.NS, root, dest, src string, ro, file bool) error {
	fd, err := n.Idmapped(src, true, ro)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t, err := openInRoot(root, dest, file)
	if err != nil {
		return err
	}
	defer t.Close()
	if err := unix.MoveMount(fd, "", int(t.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s on %s: %w", src, dest, err)
	}
	return nil
}

// fsAs sets the calling (locked) thread's file system uid and gid to id
// and raises again the capabilities the change took from its effective
// set (capabilities(7): a non-zero fsuid clears CAP_CHOWN, CAP_DAC_*,
// CAP_FOWNER, CAP_FSETID, CAP_MKNOD... from it): overlayfs copies up and
// makes whiteouts with its mounter's credentials.
func fsAs(id uint32) error {
	unix.Setfsuid(int(id))
	unix.Setfsgid(int(id))
	if got, _ := unix.SetfsuidRetUid(-1); got != int(id) {
		return fmt.Errorf("setfsuid %d: still %d", id, got)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		data[i].Effective = data[i].Permitted
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// podNetSysctls let an unprivileged container root do in the pod's network
// namespace what a container root does without a user namespace: bind
// ports below 1024 (nginx on :80) and ping (ICMP datagram sockets).
var podNetSysctls = map[string]string{
	"net/ipv4/ip_unprivileged_port_start": "0",
	"net/ipv4/ping_group_range":           "0 2147483647",
}

// setPodNetSysctls writes podNetSysctls in the caller's network namespace
// (the pod's: the local agent runs in it).
func setPodNetSysctls() error {
	var errs []error
	for k, v := range podNetSysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}
