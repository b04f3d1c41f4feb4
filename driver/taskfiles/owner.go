package taskfiles

import "math"

// Who owns what a copy makes, and which mode bits it keeps.
//
// Back on the host, nothing the command left is trusted: the host runs what
// is in a task's dirs (a poststop task, a user of nomad alloc fs, a sibling
// task reading alloc/data), so a file or directory the write-back makes
// there never carries setuid, setgid or sticky bits (the mode is masked to
// 0777 and set after the owner, by fchmod on the new descriptor: a chown
// after it cannot bring one back, and none is ever asked for) and is never
// owned by root: it belongs to the user the command ran as when that is an
// unprivileged uid, else to Nobody. FIFOs, sockets and devices are never
// made (copier.leaf).
//
// Into the sandbox, the copy keeps what Nomad would: the task's dirs are
// what an exec task sees bind-mounted, modes whole (Nomad's artifact
// fetcher already drops setuid and setgid; a template's perms are the job's
// choice). The copy is owned by the sandbox task's user, so a setuid or
// setgid bit there runs a file as that user, which its command is already;
// only when that user is unknown (the copy then stays the plugin's, root)
// are those bits dropped, since a root-owned setuid file would hand root to
// the command.

// NobodyUID and NobodyGID own what a write-back makes on the host when the
// command's user is root or unknown: nobody and nogroup (nobody on Red Hat),
// which own no file and hold no right.
const (
	NobodyUID = 65534
	NobodyGID = 65534
)

type owner struct {
	uid, gid int
	keep     uint32 // mode bits a copy keeps
}

func (o owner) perm(p uint32) uint32 { return p & o.keep }

// mode is what an entry of mode m has once copied.
func (o owner) mode(m uint32) uint32 { return m&^0o7777 | o.perm(m) }

// unprivileged says id is a uid or gid that is not root and that chown
// takes as one ((uid_t)-1 leaves the owner as it is: the plugin's).
func unprivileged(id int) bool { return id > 0 && id < math.MaxInt32 }

// hostOwner is the owner of what a write-back makes on the host, for a
// command that ran as uid:gid.
func hostOwner(uid, gid int) owner {
	o := owner{uid: NobodyUID, gid: NobodyGID, keep: 0o777}
	if unprivileged(uid) {
		o.uid = uid
	}
	if unprivileged(gid) {
		o.gid = gid
	}
	return o
}

// sandboxOwner is the owner of what a copy makes in the sandbox: its task's
// user uid:gid, -1 where unknown.
func sandboxOwner(uid, gid int) owner {
	o := owner{uid: uid, gid: gid, keep: 0o7777}
	if uid < 0 || uid >= math.MaxInt32 {
		o.uid, o.keep = -1, o.keep&^0o4000
	}
	if gid < 0 || gid >= math.MaxInt32 {
		o.gid, o.keep = -1, o.keep&^0o2000
	}
	return o
}
