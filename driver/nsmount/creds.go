package nsmount

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrPrivileged matches a mount refused because the sandbox's processes could
// write into it what the host would trust.
var ErrPrivileged = errors.New("the sandbox can make files the host would trust")

// maxStatus bounds how much of /proc/<pid>/status is read (a few hundred
// bytes: the fields are the kernel's).
const maxStatus = 16 << 10

// unprivileged refuses, with ErrPrivileged, a namespace whose process is
// not plainly unprivileged as the host sees it (/proc/<pid>/status, read
// through the /proc/<pid> the namespace was opened by):
//   - root in any of its uids or gids: it writes root-owned files;
//   - any capability permitted, effective or ambient: CAP_CHOWN with
//     CAP_FSETID or CAP_FOWNER makes a root-owned setuid file, CAP_MKNOD a
//     device node, CAP_SETUID makes it root (Nomad's exec driver gives
//     its default set to a task of any user, as ambient capabilities);
//   - a bounding set it could still gain from (no_new_privs unset): one
//     setuid-root file in the sandbox (sudo in an image) makes it root.
//
// A process of uid 0 in a user namespace of its own is refused too
// (it holds capabilities there): copying costs time, never safety.
func (n *Namespace) unprivileged() error {
	fd, err := unix.Openat(int(n.proc.Fd()), "status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("read the credentials of sandbox process %d: %w", n.pid, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, maxStatus)
	m := 0
	for m < len(buf) {
		k, err := unix.Read(fd, buf[m:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the credentials of sandbox process %d: %w", n.pid, err)
		}
		if k == 0 {
			break
		}
		m += k
	}
	why, err := privilege(buf[:m])
	if err != nil {
		return fmt.Errorf("the credentials of sandbox process %d: %w", n.pid, err)
	}
	if why != "" {
		return fmt.Errorf("%w: its process %d %s", ErrPrivileged, n.pid, why)
	}
	return nil
}

// privilege says what in a /proc/<pid>/status makes its process privileged
// (see unprivileged), "" when nothing does.
func privilege(status []byte) (string, error) {
	f := map[string]string{}
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{':'})
		if ok {
			f[string(k)] = strings.TrimSpace(string(v))
		}
	}
	for _, id := range []string{"Uid", "Gid"} {
		ids := strings.Fields(f[id])
		if len(ids) != 4 {
			return "", fmt.Errorf("no %s line", id)
		}
		for _, s := range ids {
			if s == "0" {
				return "runs as root (" + id + " " + strings.Join(ids, " ") + ")", nil
			}
		}
	}
	caps := map[string]uint64{}
	for _, c := range []string{"CapPrm", "CapEff", "CapAmb", "CapBnd"} {
		v, err := strconv.ParseUint(f[c], 16, 64)
		if err != nil {
			return "", fmt.Errorf("%s: %w", c, err)
		}
		caps[c] = v
	}
	for _, c := range []string{"CapPrm", "CapEff", "CapAmb"} {
		if caps[c] != 0 {
			return fmt.Sprintf("holds capabilities (%s %016x)", c, caps[c]), nil
		}
	}
	if f["NoNewPrivs"] != "1" && caps["CapBnd"] != 0 {
		return fmt.Sprintf("can gain capabilities through a setuid file (no_new_privs unset, CapBnd %016x)", caps["CapBnd"]), nil
	}
	return "", nil
}
