package nsmount

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Ending a sandbox's processes. A process of the sandbox that holds a cwd or
// a directory descriptor in a mounted dir keeps writing into the host dir
// behind it after the mount is detached; so before a task's exit is reported
// every process of its sandbox is ended, from the host, trusting nothing the
// sandbox says:
//
//   - a process is the sandbox's when it is in the sandbox's mount namespace
//     (held open, so its inode cannot pass to another namespace meanwhile),
//     or, when the sandbox has a pid namespace of its own, in that one or
//     in one nested in it (a process that made itself a new mount namespace
//     stays in its pid namespace);
//   - each is signalled through a pidfd opened before its namespaces are
//     checked, so a pid reused meanwhile is never hit: the signal goes to
//     the process that was checked, or fails when it is gone;
//   - SIGKILL, then a look again, until a look finds none: at most
//     KillRounds rounds and a last look (a process may fork between the
//     look and its kill; a SIGKILLed one forks no more). Killing the init of the sandbox's pid
//     namespace (the warm task's own process under exec and docker) makes
//     the kernel end every process in it, so a fork bomb does not outrun it.

// KillRounds bounds the looks of KillAll; killWait bounds each round's wait
// for the signalled processes to exit.
const (
	KillRounds = 8
	killWait   = 500 * time.Millisecond
	// maxThreads bounds the threads looked at in a thread group whose
	// leader has exited (its namespaces then read through a thread).
	maxThreads = 256
	// maxNSDepth bounds a walk up nested pid namespaces (the kernel
	// nests them at most 32 deep).
	maxNSDepth = 33
)

// ErrSurvivors means processes of the sandbox were still there after
// KillRounds rounds of SIGKILL.
var ErrSurvivors = errors.New("processes of the sandbox survived SIGKILL")

// nsID names a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) nsID { return nsID{uint64(st.Dev), st.Ino} }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return idOf(&st), nil
}

// killer is one KillAll: the namespaces it ends and the plugin's own.
type killer struct {
	mnt     nsID     // the sandbox's mount namespace
	selfPID nsID     // the plugin's pid namespace
	pidNS   *os.File // the sandbox's own pid namespace, held open; nil when it shares the plugin's
	pid     nsID
	self    int
}

// KillAll ends every process of the sandbox (see above) and returns how
// many it signalled. ErrSurvivors (wrapped) when some were left after
// KillRounds rounds. Processes in the plugin's own mount namespace are never
// the sandbox's (Open and Find refuse it).
func (n *Namespace) KillAll() (int, error) {
	st, err := fstat(int(n.ns.Fd()))
	if err != nil {
		return 0, fmt.Errorf("stat the sandbox's mount namespace: %w", err)
	}
	k := &killer{mnt: idOf(st), self: os.Getpid()}
	if selfMnt, err := statNS("/proc/self/ns/mnt"); err != nil || selfMnt == k.mnt {
		return 0, fmt.Errorf("the sandbox's mount namespace is not one of its own (%v)", err)
	}
	if k.selfPID, err = statNS("/proc/self/ns/pid"); err != nil {
		return 0, fmt.Errorf("read the plugin's pid namespace: %w", err)
	}
	defer k.close()
	k.learnPIDNS("/proc/" + strconv.Itoa(n.pid))
	killed := 0
	for range KillRounds {
		signalled, found, err := k.round()
		killed += signalled
		if err != nil || found == 0 {
			return killed, err
		}
	}
	_, found, err := k.round()
	if err == nil && found > 0 {
		err = fmt.Errorf("%w: %d still there after %d rounds", ErrSurvivors, found, KillRounds)
	}
	return killed, err
}

func (k *killer) close() {
	if k.pidNS != nil {
		k.pidNS.Close()
	}
}

// round looks at every process once, SIGKILLs the sandbox's, and waits a
// little for them to exit. found is how many it found.
func (k *killer) round() (signalled, found int, err error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, fmt.Errorf("list processes: %w", err)
	}
	var pidfds []int
	defer func() {
		for _, fd := range pidfds {
			unix.Close(fd)
		}
	}()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 1 || pid == k.self || !k.member(pid) {
			continue
		}
		// The pidfd first, then the look again: the signal reaches the
		// process that was looked at, or none.
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ENOSYS) {
			return signalled, found, fmt.Errorf("pidfd_open: %w", err)
		}
		if err != nil {
			continue // gone
		}
		if !k.member(pid) {
			unix.Close(fd)
			continue
		}
		found++
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
			unix.Close(fd)
			continue
		}
		signalled++
		pidfds = append(pidfds, fd)
	}
	waitExit(pidfds, killWait)
	return signalled, found, nil
}

// waitExit waits until every pidfd says its process exited, at most d.
func waitExit(pidfds []int, d time.Duration) {
	polls := make([]unix.PollFd, len(pidfds))
	for i, fd := range pidfds {
		polls[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	deadline := time.Now().Add(d)
	for left := len(polls); left > 0; {
		wait := time.Until(deadline)
		if wait <= 0 {
			return
		}
		n, err := unix.Poll(polls, int(wait.Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for i := range polls {
			if n > 0 && polls[i].Fd >= 0 && polls[i].Revents != 0 {
				polls[i].Fd = -1 // exited: poll skips it from now on
				left--
			}
		}
	}
}

// member says whether process pid is the sandbox's. A thread group whose
// leader has exited is looked at through its threads.
func (k *killer) member(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	if ok, err := k.memberAt(dir); err == nil {
		return ok
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return false
	}
	for i, t := range tasks {
		if i >= maxThreads {
			break
		}
		if ok, err := k.memberAt(dir + "/task/" + t.Name()); err == nil && ok {
			return true
		}
	}
	return false
}

// memberAt looks at the namespaces of the process or thread at dir.
func (k *killer) memberAt(dir string) (bool, error) {
	mnt, err := statNS(dir + "/ns/mnt")
	if err != nil {
		return false, err
	}
	if mnt == k.mnt {
		k.learnPIDNS(dir)
		return true, nil
	}
	if k.pidNS == nil {
		return false, nil
	}
	pid, err := statNS(dir + "/ns/pid")
	if err != nil {
		return false, err
	}
	switch pid {
	case k.selfPID:
		return false, nil
	case k.pid:
		return true, nil
	}
	return k.nestedIn(dir + "/ns/pid"), nil
}

// learnPIDNS takes, from a process of the sandbox's mount namespace, the
// sandbox's own pid namespace: the outermost one below the plugin's that
// holds the process. Once only, and held open from then on.
func (k *killer) learnPIDNS(dir string) {
	if k.pidNS != nil {
		return
	}
	f, err := os.Open(dir + "/ns/pid")
	if err != nil {
		return
	}
	// Still the sandbox's process? The namespace file was opened after the
	// look at its mount namespace.
	if mnt, err := statNS(dir + "/ns/mnt"); err != nil || mnt != k.mnt {
		f.Close()
		return
	}
	for range maxNSDepth {
		st, err := fstat(int(f.Fd()))
		if err != nil || idOf(st) == k.selfPID {
			f.Close() // the sandbox shares the plugin's pid namespace
			return
		}
		parent, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_PARENT)
		if err != nil {
			f.Close()
			return
		}
		pst, err := fstat(parent)
		if err != nil {
			unix.Close(parent)
			f.Close()
			return
		}
		if idOf(pst) == k.selfPID {
			unix.Close(parent)
			k.pidNS, k.pid = f, idOf(st)
			return
		}
		f.Close()
		f = os.NewFile(uintptr(parent), "pidns")
	}
	f.Close()
}

// nestedIn says whether the pid namespace at path is nested in the
// sandbox's, walking up from it; each look opens the namespace again, so
// nothing is remembered of a namespace that may end meanwhile.
func (k *killer) nestedIn(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	for range maxNSDepth {
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		unix.Close(fd)
		if err != nil {
			return false
		}
		fd = parent
		st, err := fstat(fd)
		if err != nil {
			break
		}
		switch idOf(st) {
		case k.pid:
			unix.Close(fd)
			return true
		case k.selfPID:
			unix.Close(fd)
			return false
		}
	}
	unix.Close(fd)
	return false
}
