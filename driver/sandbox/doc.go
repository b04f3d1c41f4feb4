// Package sandbox runs processes inside an existing Nomad allocation on this node
// (a claimed warm sandbox) through the Nomad API, so that a launched command
// outlives the plugin process and its output and exit status can be followed, and
// followed again after a plugin restart, from nothing but a run id and two offsets.
// DESIGN.md beside this file has the tables; in brief:
//
// # Launch
//
// Launch is one Allocations().Exec call running /bin/sh -c <launcher> in the
// sandbox's task, with the task env on its stdin. The plugin makes the run dir
// ${NOMAD_ALLOC_DIR:-/alloc}/.agentkernel/<run id> from the host first (the
// launcher makes it when the host cannot). The launcher takes an O_EXCL marker in
// it, so a run starts at most once; copies stdin to the 0600 env file
// ${NOMAD_SECRETS_DIR:-/secrets}/agentkernel-<run id>.env (secrets never reach
// argv, nor the alloc dir that Nomad's FS API serves); forks the supervisor and
// returns once the command's pid is recorded. Only builtins and forks run there:
// the launch costs one exec round trip plus a few milliseconds.
//
// The supervisor starts the command through setsid (its own session, like a Nomad
// task; the pid stays the command's) with stdout and stderr going to files in the
// run dir, waits, and writes the exit status to "exit". Every record is one write
// ending in a newline, and a reader takes a record only with its newline, so no
// rename is needed. Nomad does not kill what an exec session leaves running, so
// the command outlives the session and the plugin; it dies with the sandbox (the
// container under exec and docker, the task's cgroup under raw_exec on cgroups
// v2, and Follow's reaper under raw_exec on cgroups v1).
//
// # Prime: launches without an exec
//
// An exec round trip is cheap under raw_exec (about 4 ms) but not under exec,
// where Nomad starts a container process for every exec (about 50 to 70 ms).
// Prime, called off the hot path when an allocation turns warm, starts a launch
// daemon in the sandbox: a detached shell reading run ids from a FIFO in the
// alloc dir. Launch then writes the env file (into the task's secrets dir, owned
// by the task user) and the command line from the host, writes the run id to the
// FIFO and waits for the pid record: about 3 ms under either driver. Without a
// daemon, or when it does not take the run within a second, Launch execs as
// above; the O_EXCL marker keeps the run single either way.
//
// # Follow
//
// The plugin runs on the allocation's node, so Follow reads the run dir directly
// on the host, at <HostAllocDir>/alloc/.agentkernel/<run id>, from given offsets,
// reports offsets as it copies, and returns the exit status once "exit" is there
// and both files are drained. HostAllocDir is the claimed allocation's directory
// on the host: filepath.Join(filepath.Dir(localTaskCfg.AllocDir), claimedAllocID).
//
// # Signal and Exec
//
// Signal execs kill -<n> <pid>. Exec runs an interactive command (tty, stdin and
// its close, resizes, exit code) with the run's env file sourced; when its ctx is
// cancelled the remote process gets SIGHUP (its group when it leads one), then
// SIGKILL, since Nomad lets an exec'd process run on after its client goes away.
//
// # Exit status
//
// A POSIX shell reports death by signal n as status 128+n, like a plain exit with
// that code; Nomad's executors report such a death as exit code 128+n and signal
// n. ExitStatus follows Nomad: a status of 129 to 192 reads as a signal, so a
// command that exits 143 by itself also reads as "killed by SIGTERM".
package sandbox
