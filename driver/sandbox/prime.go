package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Priming: a launch session per warm sandbox.
//
// An exec into an isolated sandbox is slow (50-70 ms under exec, 650-780 ms
// under gVisor), so a warm start must not pay one. Prime opens one exec session
// into a warm sandbox ahead of its claim and keeps it open: a shell in the
// sandbox reading run ids from the session's stdin. A primed Launch writes the
// run's env and argv files from the host (through the boundary), one line to
// the session, and reads the shell's one-line answer; then it closes the
// session. The run it starts is detached like any other, so nothing of it
// depends on the session, the plugin, or the connection to Nomad. This works
// wherever `nomad alloc exec` does: raw_exec, exec, docker with runc or gVisor
// (a FIFO in the shared alloc dir, the earlier design, does not carry a host
// write into gVisor's own kernel).
//
// A session holds one HTTP connection to the local agent, against Nomad's
// http_max_conns_per_client (100 by default); MaxSessions bounds them. A
// session that ends before its launch (agent restart, plugin restart: the new
// plugin primes again) is reported through OnSessionLost.

// sessionScript runs as sh -c <it> akp-session <runScript> [<ready command>].
// Everything a start needs is done before the start (a fork or exec costs
// milliseconds under gVisor, and so does every file the sandbox opens there):
// a supervisor R whose pipeline is a reader X and the command-to-be B, which
// is already a shell of its own running runScript in a session of its own
// (through setsid when there is one: so the start itself needs no exec but
// the command's). Then it answers "ready <uid> <gid> <alloc dir>" (the task
// user, who must own the files the host writes for it, and where the sandbox
// sees its shared alloc dir: a host path means it shares the host's
// filesystem) and waits. Given "?" on the session's stdin (fd 3), X runs the
// ready command and answers on fd 4 (ready.go), then reads on. Given a run
// id, X closes fd 4 and hands the id to B over their pipe, and B answers
// "started <id>" (on fd 4, the session's stdout, which no one else keeps: a
// running task holds no exec session) and ends the waiting shell, so the exec
// session ends: nothing on the start path touches a file. Given EOF, all end.
var sessionScript = `a=${NOMAD_ALLOC_DIR:-/alloc}/` + runDirName + `
[ -d "$a" ] || mkdir -p "$a" || exit ` + strconv.Itoa(codeMkdir) + `
` + shSetsid + `m=$$ b=$1 c=$2
exec 3<&0 4>&1
(
	read -r r _ </proc/self/stat 2>/dev/null || r=
	{
		while :; do
			IFS= read -r id <&3 || exit 0
			[ "$id" = "?" ] || break
			` + shReadyCheck + `
		done
		exec 3<&- 4>&-
		echo "$id"
		case $id in ''|.*|*[!A-Za-z0-9._-]*) exit 0 ;; esac
		echo "$id" >"$a/.session-$m"
	} | exec $s /bin/sh -c "$b" akp-session-run "$a" "$m" 3<&- 4>&4 &
	exec 3<&- 4>&-
	wait $!
	st=$?
	IFS= read -r id <"$a/.session-$m" 2>/dev/null || exit 0
	rm -f "$a/.session-$m"
	read -r _ sup <"$a/$id/` + filePid + `" 2>/dev/null || exit 0
	[ "$sup" = "$r" ] && echo "$st" >"$a/$id/` + fileExit + `"
) </dev/null >/dev/null 2>>"$a/session.log" &
exec 3<&- 4>&-
trap 'exit 0' TERM
echo "ready $(id -u 2>/dev/null || echo -1) $(id -g 2>/dev/null || echo -1) ${NOMAD_ALLOC_DIR:-/alloc}"
wait
`

// runScript is the command-to-be B, run as sh -c <it> akp-session-run <runs
// dir> <session shell pid> with the run id coming on its stdin and fd 4 the
// session's stdout. Once it has answered, it takes the run's O_EXCL marker
// (when it is taken, an exec launcher that ran because the answer was lost
// started the run: B ends), records its own pid and its parent's (R, the
// supervisor), reads the command line the host wrote and the env file, and
// execs the command in the sandbox's task dir (shCommand's rules) with its
// stdio on the run's files; a command line it cannot read is exit status 127
// with the reason on the run's stderr. R lives on and records the exit status.
var runScript = `a=$1 m=$2
IFS= read -r id || exit 0
case $id in ''|.*|*[!A-Za-z0-9._-]*) echo "failed $id" >&4; kill -TERM $m; exit 1 ;; esac
echo "started $id" >&4
exec 4>&-
kill -TERM $m
d=$a/$id e=` + strings.ReplaceAll(shEnvFile, "$1", "$id") + `
set -C
{ echo "$m" >"$d/` + fileLaunched + `"; } 2>/dev/null || exit 0
set +C
echo "$$ $PPID" >"$d/` + filePid + `"
exec </dev/null >"$d/` + fileStdout + `" 2>"$d/` + fileStderr + `"
if ! { [ -r "$d/` + fileArgv + `" ] && . "$d/` + fileArgv + `"; }; then
	echo "agentkernel-pool: cannot read the command line of run $id" >&2
	exit 127
fi
z=$NOMAD_ALLOC_DIR
. "$e" || exit
export ` + envSandboxAllocDir + `=$z
t=${NOMAD_TASK_DIR%/*}
cd "${t:-/}" 2>/dev/null || cd /
exec "$@"
`

const (
	// fileArgv is the run's command as a shell "set --" line, written by the
	// host for a primed launch.
	fileArgv = "argv"
	// DefaultMaxSessions bounds the launch sessions a Runner holds open: half
	// of Nomad's default connection limit per client address.
	DefaultMaxSessions = 50
	// maxAnswer bounds a line the session's shell answers: "ready" with a
	// path, a run id, a line of the ready command's output (longer ones are
	// cut); maxAnswers the lines other than the ready command's (it answers
	// two).
	maxAnswer  = 8 << 10
	maxAnswers = 16
)

// session is an open launch session into one sandbox.
type session struct {
	ref   Ref
	stdin *io.PipeWriter
	lines chan string   // the shell's answers
	done  chan struct{} // closed when the exec has ended
	info  SessionInfo
	once  sync.Once
	// ready is the template's ready command ("" for none); check holds the
	// state of its runs (ready.go).
	ready string
	check readyCheck
}

// close ends the session: the shell reads EOF and exits.
func (s *session) close() { s.once.Do(func() { s.stdin.Close() }) }

// Prime opens a launch session into the sandbox, so that a Launch there costs
// no exec. Call it off the hot path, when an allocation turns warm. Priming a
// primed sandbox does nothing. Beyond MaxSessions it primes nothing and says
// so: launches there go by exec.
func (r *Runner) Prime(ctx context.Context, ref Ref) error {
	return r.PrimeReady(ctx, ref, "")
}

// PrimeReady is Prime for a sandbox whose template has a ready command
// (ready, run with sh -c): CheckReady runs it through the session.
func (r *Runner) PrimeReady(ctx context.Context, ref Ref, ready string) error {
	r.mu.Lock()
	if _, ok := r.sessions[ref.AllocID]; ok {
		r.mu.Unlock()
		return nil
	}
	if limit := r.maxSessions(); len(r.sessions) >= limit {
		r.mu.Unlock()
		r.logger().Warn("launch sessions at their limit; a start in this sandbox will launch by exec", "alloc_id", ref.AllocID, "limit", limit)
		return nil
	}
	r.mu.Unlock()

	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{ref: ref, stdin: stdinW, lines: make(chan string, 4), done: make(chan struct{}), ready: ready}
	s.check.init()
	var stderr untrusted.Buffer // the sandbox's shell prints what it likes
	var code int
	var err error
	// The session outlives Prime's ctx: it lives until a Launch takes it or
	// the Runner closes.
	go func() {
		defer close(s.done)
		defer outW.Close()
		code, err = r.execAs(context.Background(), OpExecSession, ref, false, []string{"/bin/sh", "-c", sessionScript, "akp-session", runScript, ready},
			stdinR, outW, &stderr, nil)
		stdinR.Close()
		r.sessionEnded(s)
	}()
	go s.readAnswers(outR)

	ctx, cancel := withTimeout(ctx, sessionReadyWait)
	defer cancel()
	select {
	case line, ok := <-s.lines:
		f := strings.SplitN(line, " ", 4)
		if ok && len(f) == 4 && f[0] == "ready" {
			s.info.UID, _ = strconv.Atoi(f[1])
			s.info.GID, _ = strconv.Atoi(f[2])
			s.info.AllocDir = f[3]
			s.info.NamespacePID = namespacePID(ref, s.info)
			r.mu.Lock()
			if r.sessions == nil {
				r.sessions = map[string]*session{}
			}
			r.sessions[ref.AllocID] = s
			r.mu.Unlock()
			return nil
		}
		s.close()
		// Whatever else the shell says is dropped, so that its exec is
		// never stuck writing it; it gets until ctx ends to finish.
		go func() {
			for range s.lines {
			}
		}()
		select {
		case <-s.done:
		case <-ctx.Done():
			return fmt.Errorf("prime allocation %s: %w: it answered %s and did not end: %w", ref.short(), ErrSessionRefused, untrusted.Text(line), ctx.Err())
		}
		if err != nil {
			return fmt.Errorf("prime allocation %s: %w", ref.short(), err)
		}
		return fmt.Errorf("prime allocation %s: %w: %s", ref.short(), ErrSessionRefused, orExit(&stderr, code))
	case <-ctx.Done():
		s.close()
		return fmt.Errorf("prime allocation %s: %w: no answer: %w", ref.short(), ErrSessionRefused, ctx.Err())
	}
}

// ErrSessionRefused means the sandbox itself did not run a launch session (no
// shell, a shell that failed or did not answer); an error without it is the
// way there (the Nomad API).
var ErrSessionRefused = errors.New("the sandbox refused a launch session")

func (r *Runner) maxSessions() int {
	if r.MaxSessions > 0 {
		return r.MaxSessions
	}
	return DefaultMaxSessions
}

// sessionEnded forgets a session whose exec ended, and reports it lost unless
// a Launch had taken it.
func (r *Runner) sessionEnded(s *session) {
	r.mu.Lock()
	lost := r.sessions[s.ref.AllocID] == s
	if lost {
		delete(r.sessions, s.ref.AllocID)
	}
	r.mu.Unlock()
	if lost && r.OnSessionLost != nil {
		r.logger().Debug("launch session ended before a launch", "alloc_id", s.ref.AllocID)
		r.OnSessionLost(s.ref.AllocID)
	}
}

// takeSession hands the sandbox's session to one Launch.
func (r *Runner) takeSession(allocID string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sessions[allocID]
	delete(r.sessions, allocID)
	return s
}

// SessionInfo is what a sandbox's launch session said about it when it opened.
type SessionInfo struct {
	UID, GID int    // the sandbox task's user
	AllocDir string // its shared alloc dir, as the sandbox sees it
	// NamespacePID is a process of the sandbox in a mount namespace of its
	// own (exec, runc), found while priming (package nsmount); 0 when there
	// is none the host sees (gVisor) or it shares the host's (raw_exec).
	NamespacePID int
}

// SharesHost says the sandbox sees its shared alloc dir at the host's path:
// it shares the host's filesystem (raw_exec).
func (i SessionInfo) SharesHost(ref Ref) bool {
	return ref.HostAllocDir != "" && filepath.Clean(i.AllocDir) == filepath.Join(ref.HostAllocDir, "alloc")
}

// namespacePID finds the sandbox's mount namespace, off the start path.
func namespacePID(ref Ref, info SessionInfo) int {
	if ref.HostAllocDir == "" || info.SharesHost(ref) {
		return 0
	}
	alloc, err := ref.files().OpenDir("alloc")
	if err != nil {
		return 0
	}
	defer alloc.Close()
	ns, err := nsmount.Find(ref.AllocID, alloc, "alloc")
	if err != nil {
		return 0
	}
	defer ns.Close()
	return ns.PID()
}

// SessionInfo is what the sandbox's open launch session said; ok is false
// without one.
func (r *Runner) SessionInfo(allocID string) (SessionInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[allocID]
	if !ok {
		return SessionInfo{UID: -1, GID: -1}, false
	}
	return s.info, true
}

// Close ends every launch session; runs they started are not touched.
func (r *Runner) Close() {
	r.mu.Lock()
	all := make([]*session, 0, len(r.sessions))
	for id, s := range r.sessions {
		all = append(all, s)
		delete(r.sessions, id)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.close()
	}
}

// sendSession requests the run from a session: the run's env and command
// line written from the host, then its id sent. sent is false when the
// session could not take it (it ended, or the host sees no secrets dir): the
// caller launches by exec then. Without a command it writes the env only and
// sends nothing.
func (r *Runner) sendSession(s *session, spec Spec, env []byte) (sent bool, err error) {
	ref, files, dir := s.ref, s.ref.files(), runRel(spec.ID)
	if spec.Command != "" {
		if launched, err := files.Exists(path.Join(dir, fileLaunched)); err != nil || launched {
			if err == nil {
				err = ErrAlreadyLaunched
			}
			return false, err
		}
	}
	if err := files.CreateFile(ref.envRel(spec.ID), env, 0o600, s.info.UID, s.info.GID); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // no secrets dir on the host: the exec launcher writes it inside
		}
		return false, fmt.Errorf("write env file: %w", err)
	}
	if spec.Command == "" {
		return false, errEnvOnly
	}
	argv := "set -- " + shQuote(spec.Command)
	for _, a := range spec.Args {
		argv += " " + shQuote(a)
	}
	if err := files.CreateFile(path.Join(dir, fileArgv), []byte(argv+"\n"), 0o644, s.info.UID, s.info.GID); err != nil {
		return false, fmt.Errorf("write argv file: %w", err)
	}
	if _, err := s.stdin.Write([]byte(spec.ID + "\n")); err != nil {
		return false, nil
	}
	return true, nil
}

// errEnvOnly says sendSession wrote a run's env and had nothing to start.
var errEnvOnly = errors.New("env only")

// awaitSession waits for the session's answer to a run it was sent. ok is
// false when the session ended without one: its shell may have taken the run
// at the last moment, which the exec launcher the caller tries next finds.
func (r *Runner) awaitSession(ctx context.Context, s *session, spec Spec) (ok bool, err error) {
	for {
		select {
		case line, open := <-s.lines:
			if !open {
				return false, nil
			}
			f := strings.Fields(line)
			if len(f) < 2 || f[1] != spec.ID {
				continue
			}
			switch f[0] {
			case "started":
				// The pid record follows (see sessionScript); Follow and
				// Signal wait for it.
				return true, nil
			case "taken":
				return true, ErrAlreadyLaunched
			default:
				return true, errors.New("the launch session could not start the run (see supervisor.log in its run dir)")
			}
		case <-ctx.Done():
			return true, fmt.Errorf("wait for the launch session: %w", ctx.Err())
		}
	}
}
