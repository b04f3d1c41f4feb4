package sandbox

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// runDirName is the directory of runs inside the shared alloc dir.
const runDirName = ".agentkernel"

// Names of the run's files, in the run dir.
const (
	fileLaunched = "launched" // created with O_EXCL: the run's at-most-once guard
	filePid      = "pid"      // "<command pid> <supervisor pid>"
	fileExit     = "exit"     // "<shell exit status>"
	fileStdout   = "stdout"
	fileStderr   = "stderr"
	fileSupLog   = "supervisor.log"
)

// Shell expressions, evaluated inside the sandbox, for the run dir of run $1 and
// its env file. Under raw_exec NOMAD_*_DIR are host paths; under exec and docker
// they are /alloc and /secrets.
const (
	shRunDir  = `${NOMAD_ALLOC_DIR:-/alloc}/` + runDirName + `/$1`
	shEnvFile = `${NOMAD_SECRETS_DIR:-/secrets}/agentkernel-$1.env`
)

// Launcher exit codes, which Launch turns into errors.
const (
	codeMkdir    = 90
	codeLaunched = 91
	codeEnv      = 92
	codeNoPid    = 93
)

// shCommand is the command of a run, started in the background with its
// stdio on the run's files: with the env file sourced, in the task dir (the
// parent of NOMAD_TASK_DIR after sourcing it: "/" under exec and docker,
// <alloc>/<task> under raw_exec, so local/x means what it means under any
// driver; a raw_exec run's env names the claiming task's own dirs),
// through setsid when there is one (a session of its own, as Nomad starts
// tasks; setsid does not fork there, so the pid stays the command's). $s is
// setsid's path, $d the run dir and $e the env file.
const shCommand = `(z=$NOMAD_ALLOC_DIR; . "$e" || exit; export ` + envSandboxAllocDir + `=$z; t=${NOMAD_TASK_DIR%/*}; cd "${t:-/}" 2>/dev/null || cd /; exec $s "$@") </dev/null >"$d/` + fileStdout + `" 2>"$d/` + fileStderr + `" &`

// envSandboxAllocDir carries the sandbox's own NOMAD_ALLOC_DIR into every
// run's command, whose NOMAD_ALLOC_DIR may be the claiming task's (raw_exec:
// files.go in package driver): Reap knows the run's processes by it.
const envSandboxAllocDir = "AGENTKERNEL_SANDBOX_ALLOC_DIR"

// shSetsid sets $s to setsid's path, or empty.
const shSetsid = `s=
for x in /usr/bin/setsid /bin/setsid /usr/sbin/setsid /sbin/setsid; do [ -x "$x" ] && { s=$x; break; }; done
`

// shStartRun defines akp_start <command> <args...>, which starts a run whose dir
// is $d and env file $e: a forked subshell, the supervisor, starts the command
// (shCommand), reports its pid on the command substitution's pipe, closes it,
// waits and records the exit status. akp_start returns once both pids are
// recorded; the supervisor lives on, tied to no exec session.
const shStartRun = `akp_start() {
	` + shSetsid + `	r=$( (
		` + shCommand + `
		p=$!
		echo "c $p"
		exec >/dev/null
		wait "$p"
		echo "$?" >"$d/` + fileExit + `"
	) </dev/null 2>>"$d/` + fileSupLog + `" 3<&- & echo "s $!")
	c= s=
	set -- $r
	while [ $# -ge 2 ]; do
		case $1 in c) c=$2 ;; s) s=$2 ;; esac
		shift 2
	done
	[ -n "$c" ] && [ -n "$s" ] || return 1
	echo "$c $s" >"$d/` + filePid + `"
}
`

// launcherScript runs as sh -c <it> akp-launch <run id> <mode> <reader> <command>
// <args...> with the env file's content on stdin; mode "run" starts the command,
// "env" only writes the env. The reader is "read", a builtin loop that costs no
// exec but a syscall per byte, or "cat" for a large env. It prints the
// command's pid.
//
// Every step is a shell builtin or a fork, never an exec, but for mkdir when the
// plugin could not make the run dir from the host: a launch costs a few forks.
// The env file is made 0600 (umask 077 in a subshell, so the command keeps the
// sandbox's umask).
var launcherScript = shStartRun + `d=` + shRunDir + ` e=` + shEnvFile + `
[ -d "$d" ] || mkdir -p "$d" || exit ` + strconv.Itoa(codeMkdir) + `
if [ "$2" = run ]; then
	set -C
	{ echo "$$" >"$d/` + fileLaunched + `"; } 2>/dev/null || { echo "run $1 was already launched" >&2; exit ` + strconv.Itoa(codeLaunched) + `; }
	set +C
fi
if [ "$3" = cat ]; then
	(umask 077 && exec cat >"$e")
else
	(umask 077 && while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done >"$e")
fi || exit ` + strconv.Itoa(codeEnv) + `
[ "$2" = run ] || exit 0
shift 3
akp_start "$@" || { echo "supervisor did not report a pid" >&2; exit ` + strconv.Itoa(codeNoPid) + `; }
echo "$c"
`

// execScript runs as sh -c <it> akp-exec <run id> <exec id> <command> <args...>:
// it records its pid (the command's, after exec) for cancellation, sources the
// run's env when there is one and execs the command.
const execScript = `{ echo "$$" >"` + shRunDir + `/exec-$2.pid"; } 2>/dev/null
e=` + shEnvFile + `
shift 2
if [ -r "$e" ]; then . "$e" || exit 126; fi
exec "$@"
`

// hangupScript runs as sh -c <it> akp-hangup <pid>: SIGHUP to the process group
// the pid leads (a tty session), else to the pid; SIGKILL when it is still there
// after two seconds.
const hangupScript = `p=$1
kill -HUP -"$p" 2>/dev/null || kill -HUP "$p" 2>/dev/null || exit 0
kill -CONT -"$p" 2>/dev/null || kill -CONT "$p" 2>/dev/null
i=0
while kill -0 "$p" 2>/dev/null; do
	if [ "$i" -ge 20 ]; then kill -KILL -"$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; exit 0; fi
	sleep 0.1 2>/dev/null || sleep 1
	i=$((i+1))
done
`

// signalScript runs as sh -c <it> akp-signal <n> <pid>. SIGKILL goes to the
// command's whole session, as Nomad's final kill of a task ends its process
// tree; other signals go to the command alone, as Nomad delivers them to a task.
const signalScript = `if [ "$1" = 9 ]; then kill -9 -"$2" 2>/dev/null || kill -9 "$2"; else kill -"$1" "$2"; fi`

// catAbove is the env size from which cat, one exec, beats the shell's read
// loop, which reads a byte per syscall.
const catAbove = 4 << 10

func launchCommand(runID string, s Spec, envSize int) []string {
	mode, reader := "env", "read"
	if s.Command != "" {
		mode = "run"
	}
	if envSize > catAbove {
		reader = "cat"
	}
	cmd := []string{"/bin/sh", "-c", launcherScript, "akp-launch", runID, mode, reader}
	if s.Command != "" {
		cmd = append(cmd, s.Command)
		cmd = append(cmd, s.Args...)
	}
	return cmd
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellReserved are names a POSIX shell may refuse to set (bash keeps them
// read-only); exporting one would abort sourcing the env file.
var shellReserved = map[string]bool{
	"PPID": true, "UID": true, "EUID": true, "GROUPS": true, "SHELLOPTS": true,
	"BASHOPTS": true, "BASH_VERSINFO": true, "BASHPID": true,
}

// envFile renders env as a file for sh's "." command: one export per variable,
// the value single-quoted, so nothing in it is expanded. Names a shell cannot
// export are left out and returned.
func envFile(env map[string]string) (content []byte, skipped []string) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if !envNamePattern.MatchString(k) || shellReserved[k] {
			skipped = append(skipped, k)
			continue
		}
		v := strings.ReplaceAll(env[k], "\x00", "")
		b.WriteString("export ")
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(shQuote(v))
		b.WriteByte('\n')
	}
	return []byte(b.String()), skipped
}

// shQuote quotes s for a POSIX shell: inside single quotes nothing is special
// but the single quote itself, which is closed, escaped and reopened.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
