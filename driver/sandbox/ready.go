package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Readiness: a warm sandbox's template may say how to tell that what it
// prepares is done (a repository cloned, a server listening): a ready
// command, run with sh -c in the sandbox as its task's user, in its task
// dir. The pool runs it at an interval until it exits 0, and again while the
// sandbox waits for a claim. A fork in the sandbox is the least it costs, so
// it goes through the launch session that is open anyway, never by an exec
// of its own: the host writes "?" to the session, and the session's reader
// (X in sessionScript) runs the command and answers every line of its output
// as "|<line>", then "checked <exit code>", on the session's stdout, then
// reads its next line. One check runs at a time, in the foreground of X: a
// start whose run id arrives meanwhile waits for it (a ready command should
// be quick), and nothing else writes to the session's stdout then, so the
// answers never interleave with the start's.

// shReadyCheck runs the ready command $c in the task dir with stdin, fd 3 and
// fd 4 closed, and answers its output and exit code on fd 4. The command
// substitution collects the exit code on fd 5 while the output goes through
// the prefixing loop, so no line of the output can pass for the verdict.
const shReadyCheck = `k=$( { { ( t=${NOMAD_TASK_DIR%/*}; cd "${t:-/}" 2>/dev/null || cd /; exec /bin/sh -c "$c" ) </dev/null 2>&1 3<&- 4>&- 5>&-; echo "$?" >&5; } | while IFS= read -r l || [ -n "$l" ]; do printf '|%s\n' "$l"; done >&4 5>&-; } 5>&1 )
			echo "checked $k" >&4`

// MaxReadyOutput is how much of a ready command's output CheckReady keeps:
// the end of it, where a failing command says why.
const MaxReadyOutput = 1 << 10

// ReadyResult is one run of a ready command: its exit code (-1 when the
// session answered none it could read) and the last MaxReadyOutput bytes of
// its output, stdout and stderr together. The output is the sandbox's:
// quote it before it reaches anyone.
type ReadyResult struct {
	Code   int
	Output []byte
}

// ErrNoSession means the sandbox has no launch session to run its ready
// command in (not primed, taken by a start, lost, or beyond MaxSessions).
var ErrNoSession = errors.New("no launch session in the sandbox")

// ErrCheckUnfinished means the ready command did not finish within the
// caller's deadline. It still runs: the next CheckReady waits for its answer
// rather than starting another.
var ErrCheckUnfinished = errors.New("the ready command did not finish")

// readyCheck is a session's ready command state.
type readyCheck struct {
	turn    chan struct{}    // one CheckReady at a time
	answers chan ReadyResult // the verdicts, one per "?"
	ended   chan struct{}    // closed when the session's stdout ends
	pending bool             // a "?" sent whose answer no CheckReady took; under turn
	out     []byte           // the output of the check running; readAnswers' only
}

func (c *readyCheck) init() {
	c.turn = make(chan struct{}, 1)
	c.answers = make(chan ReadyResult, 1)
	c.ended = make(chan struct{})
}

// tailBytes keeps the last MaxReadyOutput bytes of b.
func tailBytes(b []byte) []byte {
	if len(b) <= MaxReadyOutput {
		return b
	}
	return append(b[:0], b[len(b)-MaxReadyOutput:]...)
}

// CheckReady runs the sandbox's ready command once through its launch
// session and returns how it ended. ctx bounds the wait for its answer: a
// command still running then gives ErrCheckUnfinished, and the next call
// waits for that run's answer instead of starting another.
func (r *Runner) CheckReady(ctx context.Context, allocID string) (ReadyResult, error) {
	r.mu.Lock()
	s := r.sessions[allocID]
	r.mu.Unlock()
	if s == nil {
		return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: %w", Ref{AllocID: allocID}.short(), ErrNoSession)
	}
	if s.ready == "" {
		return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: its session was opened without a ready command", Ref{AllocID: allocID}.short())
	}
	c := &s.check
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: %w: %w", Ref{AllocID: allocID}.short(), ErrCheckUnfinished, ctx.Err())
	}
	defer func() { <-c.turn }()
	if !c.pending {
		if _, err := s.stdin.Write([]byte("?\n")); err != nil {
			return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: %w", Ref{AllocID: allocID}.short(), ErrNoSession)
		}
		c.pending = true
	}
	select {
	case res := <-c.answers:
		c.pending = false
		return res, nil
	case <-c.ended:
		return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: %w: it ended", Ref{AllocID: allocID}.short(), ErrNoSession)
	case <-ctx.Done():
		return ReadyResult{Code: -1}, fmt.Errorf("check readiness of allocation %s: %w: %w", Ref{AllocID: allocID}.short(), ErrCheckUnfinished, ctx.Err())
	}
}

// readAnswers reads the session's stdout to its end: the ready command's
// lines to its check, the others to s.lines (at most maxAnswers of them).
// Every line is cut at maxAnswer bytes and read into one buffer, so what the
// host holds and allocates is bounded whatever the sandbox prints.
func (s *session) readAnswers(out io.Reader) {
	defer close(s.lines)
	defer close(s.check.ended)
	br := bufio.NewReaderSize(out, 4096)
	c := &s.check
	answers := 0
	var buf []byte
	for {
		var err error
		if buf, err = readLine(br, buf[:0], maxAnswer); err != nil {
			return
		}
		switch {
		case len(buf) > 0 && buf[0] == '|':
			c.out = tailBytes(append(append(c.out, buf[1:]...), '\n'))
		case bytes.HasPrefix(buf, []byte("checked ")):
			code, err := strconv.Atoi(string(buf[len("checked "):]))
			if err != nil {
				code = -1
			}
			res := ReadyResult{Code: code, Output: bytes.Clone(c.out)}
			c.out = c.out[:0]
			select {
			case c.answers <- res:
			default: // an answer no one asked for: dropped
			}
		case answers < maxAnswers:
			answers++
			s.lines <- string(buf)
		}
	}
}

// readLine reads one line into buf without its newline, cut at limit bytes
// (the rest of a longer line is read and dropped). A last line without a
// newline counts; io.EOF comes after it.
func readLine(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if room := limit - len(buf); room > 0 {
			buf = append(buf, frag[:min(len(frag), room)]...)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil && len(buf) == 0:
			return buf, err
		}
		return bytes.TrimSuffix(buf, []byte("\n")), nil
	}
}
