package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Files of the launch daemon: its FIFO in the alloc dir's runDirName, the rest
// in a run dir.
const (
	fileFifo    = "launch.fifo"
	fileArgv    = "argv"       // the run's command as a shell "set --" line
	fileLaunErr = "launch.err" // why the daemon could not start the run
	codeFifo    = 94
)

// primedClaimWait is how long Launch waits for the launch daemon to take a run
// (its O_EXCL marker) before it falls back to an exec.
const primedClaimWait = time.Second

// primeScript runs as sh -c <it> akp-prime. It starts the launch daemon: a
// detached shell that holds the FIFO open read-write (so it never reads EOF)
// and, for each run id written to it, starts the run the host described in the
// run dir, exactly as the launcher does. Requests come from the plugin, as root,
// on the host; the FIFO is the task user's, mode 0600.
//
// Under raw_exec (the alloc dir is a host path) on cgroups v1 nothing would end
// the daemon with its sandbox, so a watchdog ends it when the sandbox task's
// executor, the exec's parent, is gone.
var primeScript = shStartRun + `a=${NOMAD_ALLOC_DIR:-/alloc}/` + runDirName + ` f=$a/` + fileFifo + `
[ -d "$a" ] || mkdir -p "$a" || exit ` + strconv.Itoa(codeMkdir) + `
[ -p "$f" ] || mkfifo -m 600 "$f" || exit ` + strconv.Itoa(codeFifo) + `
w=$PPID
(
	exec 3<>"$f"
	while IFS= read -r id <&3; do
		case $id in ''|.*|*[!A-Za-z0-9._-]*) continue ;; esac
		(
			d=$a/$id e=` + strings.ReplaceAll(shEnvFile, "$1", "$id") + `
			set -C
			{ echo "$$" >"$d/` + fileLaunched + `"; } 2>/dev/null || exit 0
			set +C
			[ -r "$d/` + fileArgv + `" ] && . "$d/` + fileArgv + `" && akp_start "$@" ||
				echo "could not start run $id" >"$d/` + fileLaunErr + `"
		)
	done
) </dev/null >/dev/null 2>>"$a/launchd.log" &
dp=$!
if [ "$a" != /alloc/` + runDirName + ` ] && [ "$w" -gt 1 ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
	(while kill -0 "$w" 2>/dev/null; do sleep 10; done; kill -KILL "$dp") </dev/null >/dev/null 2>&1 &
fi
echo "$dp"
`

// Prime starts a launch daemon in the sandbox, so that Launch there skips the
// exec round trip: the plugin writes the run's files on the host and its id to
// the daemon's FIFO. Call it off the hot path, when an allocation turns warm;
// a primed sandbox is no different otherwise, and Launch falls back to an exec
// whenever the daemon does not answer. Priming a primed sandbox does nothing.
func (r *Runner) Prime(ctx context.Context, ref Ref) error {
	if f, err := openFifo(ref); err == nil {
		f.Close()
		return nil
	}
	ctx, cancel := withTimeout(ctx, orDefault(r.LaunchTimeout, DefaultLaunchTimeout))
	defer cancel()
	var stderr bytes.Buffer
	code, err := r.call(ctx, ref, false, []string{"/bin/sh", "-c", primeScript, "akp-prime"},
		bytes.NewReader(nil), &bytes.Buffer{}, &stderr, nil)
	if err != nil {
		return fmt.Errorf("prime allocation %s: %w", ref.short(), err)
	}
	if code != 0 {
		return fmt.Errorf("prime allocation %s: %s", ref.short(), orExit(strings.TrimSpace(stderr.String()), code))
	}
	return r.awaitDaemon(ctx, ref)
}

// daemonReadyWait bounds how long Prime waits for the launch daemon it started
// to open its FIFO.
const daemonReadyWait = 5 * time.Second

// awaitDaemon waits until the launch daemon reads its FIFO. The prime script
// returns as soon as the daemon is started in the background, a moment before
// the daemon opens the FIFO; a Prime or Launch in that moment would see no
// daemon (a second Prime would start a second one).
func (r *Runner) awaitDaemon(ctx context.Context, ref Ref) error {
	if ref.HostAllocDir == "" {
		return nil // launches go through exec anyway
	}
	deadline := time.Now().Add(daemonReadyWait)
	for delay := 100 * time.Microsecond; ; delay = min(delay*2, 10*time.Millisecond) {
		if f, err := openFifo(ref); err == nil {
			f.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prime allocation %s: the launch daemon did not open its FIFO within %s", ref.short(), daemonReadyWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prime allocation %s: wait for the launch daemon: %w", ref.short(), ctx.Err())
		case <-time.After(delay):
		}
	}
}

// launchPrimed launches through the launch daemon. ok is false when the sandbox
// is not primed, or its daemon did not take the run in time (sent is true then):
// nothing was started, or the daemon takes the run late and the exec launcher,
// which the caller tries next, finds it taken. The run's files are created
// through the boundary, exclusively, owned by the FIFO's owner (the task user).
func (r *Runner) launchPrimed(ctx context.Context, ref Ref, s Spec, env []byte) (ok, sent bool, err error) {
	if ref.HostAllocDir == "" {
		return false, false, nil
	}
	fifo, err := openFifo(ref)
	if errors.Is(err, allocfs.ErrTampered) {
		return true, false, err
	}
	if err != nil {
		return false, false, nil
	}
	defer fifo.Close()
	uid, gid, err := ownerOf(fifo)
	if err != nil {
		return false, false, nil
	}
	files, dir := ref.files(), runRel(s.ID)
	if s.Command != "" {
		if launched, err := files.Exists(path.Join(dir, fileLaunched)); err != nil || launched {
			if err == nil {
				err = ErrAlreadyLaunched
			}
			return true, false, err
		}
	}
	if ok, err := files.Exists(ref.secretsRel()); err != nil || !ok {
		return false, false, nil
	}
	if err := files.CreateFile(ref.envRel(s.ID), env, 0o600, uid, gid); err != nil {
		if errors.Is(err, allocfs.ErrTampered) {
			return true, false, err
		}
		r.logger().Debug("could not write env file from the host", "error", err)
		return false, false, nil
	}
	if s.Command == "" {
		return true, false, nil
	}
	argv := "set -- " + shQuote(s.Command)
	for _, a := range s.Args {
		argv += " " + shQuote(a)
	}
	if err := files.CreateFile(path.Join(dir, fileArgv), []byte(argv+"\n"), 0o644, uid, gid); err != nil {
		_ = files.Remove(ref.envRel(s.ID))
		if errors.Is(err, allocfs.ErrTampered) {
			return true, false, err
		}
		return false, false, nil
	}
	if _, err := fifo.Write([]byte(s.ID + "\n")); err != nil {
		_ = files.Remove(ref.envRel(s.ID))
		return false, false, nil
	}
	ok, err = r.awaitPid(ctx, ref, s.ID, true)
	return ok, true, err
}

// awaitPid waits for the daemon to record the run's pids. With fallback, it
// gives up when the daemon has not taken the run within primedClaimWait.
func (r *Runner) awaitPid(ctx context.Context, ref Ref, runID string, fallback bool) (bool, error) {
	files, dir := ref.files(), runRel(runID)
	start := time.Now()
	for delay := 100 * time.Microsecond; ; delay = min(delay*2, 500*time.Microsecond) {
		_, ok, err := readRecord(files, path.Join(dir, filePid))
		if err != nil {
			return true, err
		}
		if ok {
			return true, nil
		}
		// What the daemon wrote there is not quoted: the sandbox could have
		// put anything in its place.
		if failed, err := files.Exists(path.Join(dir, fileLaunErr)); err != nil || failed {
			if err == nil {
				err = fmt.Errorf("the launch daemon could not start the run (see %s in the sandbox)", fileLaunErr)
			}
			return true, err
		}
		if fallback && time.Since(start) > primedClaimWait {
			if taken, err := files.Exists(path.Join(dir, fileLaunched)); err == nil && !taken {
				r.logger().Warn("launch daemon did not take the run; launching by exec", "run_dir", ref.RunDir(runID))
				return false, nil
			}
		}
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("wait for launch daemon: %w", ctx.Err())
		case <-time.After(delay):
		}
	}
}

// openFifo opens the launch daemon's FIFO for writing without blocking, through
// the boundary: it fails (ENXIO) when no daemon reads it.
func openFifo(ref Ref) (*os.File, error) {
	return ref.files().OpenFIFO(path.Join("alloc", runDirName, fileFifo))
}

// ownerOf tells whose an open file is: the FIFO is the sandbox task user's.
func ownerOf(f *os.File) (uid, gid int, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, errors.New("no owner")
	}
	return int(st.Uid), int(st.Gid), nil
}
