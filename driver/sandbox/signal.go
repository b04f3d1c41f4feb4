package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// linuxSignals are the signal numbers inside the sandbox, a Linux allocation,
// whatever the plugin was built for.
var linuxSignals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6,
	"BUS": 7, "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12,
	"PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17,
	"CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23,
	"XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
	"POLL": 29, "PWR": 30, "SYS": 31,
}

const (
	sigRTMin = 34
	sigRTMax = 64
)

// ParseSignal reads a signal as Nomad users write it: "SIGTERM", "term", "15",
// "SIGRTMIN+2". It returns the Linux signal number.
func ParseSignal(s string) (int, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "SIG")
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, fmt.Errorf("signal %q: number out of range 1..%d", s, sigRTMax)
		}
		return n, nil
	}
	if n, ok := linuxSignals[name]; ok {
		return n, nil
	}
	if n, ok := realtimeSignal(name); ok {
		return n, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// realtimeSignal reads RTMIN, RTMIN+k, RTMAX and RTMAX-k.
func realtimeSignal(name string) (int, bool) {
	base, sign := sigRTMin, "+"
	rest, ok := strings.CutPrefix(name, "RTMIN")
	if !ok {
		base, sign = sigRTMax, "-"
		if rest, ok = strings.CutPrefix(name, "RTMAX"); !ok {
			return 0, false
		}
	}
	n := base
	if rest != "" {
		digits, ok := strings.CutPrefix(rest, sign)
		k, err := strconv.Atoi(digits)
		if !ok || err != nil || k < 0 || digits[0] == '+' || digits[0] == '-' {
			return 0, false
		}
		if sign == "+" {
			n += k
		} else {
			n -= k
		}
	}
	return n, n >= sigRTMin && n <= sigRTMax
}

// Signal delivers sig to the run's command; SIGKILL ends the command's whole
// session (its children too). A command that has already exited is no error.
func (r *Runner) Signal(ctx context.Context, ref Ref, runID, sig string) error {
	n, err := ParseSignal(sig)
	if err != nil {
		return fmt.Errorf("signal run in allocation %s: %w", ref.short(), err)
	}
	st, exited, err := r.Status(ref, runID)
	if err != nil {
		return fmt.Errorf("signal run in allocation %s: %w", ref.short(), err)
	}
	if exited {
		r.logger().Debug("signal after exit ignored", "alloc_id", ref.AllocID, "run_id", runID, "signal", sig, "exit_code", st.Code)
		return nil
	}
	ctx, cancel := withTimeout(ctx, orDefault(r.CallTimeout, DefaultCallTimeout))
	defer cancel()
	if err := awaitPidRecord(ctx, ref.files(), runRel(runID), pidRecordWait); err != nil {
		return fmt.Errorf("signal run %s in allocation %s: %w", runID, ref.short(), err)
	}
	fields, _, err := readRecord(ref.files(), path.Join(runRel(runID), filePid))
	if err != nil {
		return fmt.Errorf("signal run %s in allocation %s: %w", runID, ref.short(), err)
	}
	pid := fields[0]
	if _, err := strconv.Atoi(pid); err != nil {
		return fmt.Errorf("signal run %s in allocation %s: bad pid record %s", runID, ref.short(), untrusted.Text(pid))
	}
	var stderr untrusted.Buffer // the sandbox's shell prints what it likes
	code, err := r.call(ctx, ref, false, []string{"/bin/sh", "-c", signalScript, "akp-signal", strconv.Itoa(n), pid},
		bytes.NewReader(nil), io.Discard, &stderr, nil)
	if err != nil {
		return fmt.Errorf("signal run %s in allocation %s: %w", runID, ref.short(), err)
	}
	if code != 0 {
		if strings.Contains(stderr.String(), "No such process") {
			return nil // it ended between our look and the kill
		}
		if _, exited, _ := r.Status(ref, runID); exited {
			return nil
		}
		return fmt.Errorf("signal run %s in allocation %s: kill -%d %s: %s", runID, ref.short(), n, pid, orExit(&stderr, code))
	}
	return nil
}
