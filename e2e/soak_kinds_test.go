package e2e

import (
	"fmt"
	"strconv"
	"strings"
)

// A soak task's kind: what its command does and what must come of it.
type soakKind struct {
	name   string
	script string // run by /bin/sh -c; %d is the task's number
	code   int    // expected exit code; -1: stopped, any
	check  func(stdout string, i int) error
}

var soakKinds = []soakKind{
	{"quick", `touch "$NOMAD_TASK_DIR/.claimed" && echo dir=$(pwd) n=%d`, 0, func(out string, i int) error {
		return wantLines(out, []string{"dir="}, fmt.Sprintf(" n=%d", i))
	}},
	{"loud", `seq 1 5000; echo n=%d`, 0, func(out string, i int) error {
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 5001 || lines[5000] != fmt.Sprintf("n=%d", i) {
			return fmt.Errorf("%d lines, last %q; want 5001, last n=%d", len(lines), lastFew(lines), i)
		}
		for k, l := range lines[:5000] {
			if l != strconv.Itoa(k+1) {
				return fmt.Errorf("line %d is %q", k+1, l)
			}
		}
		return nil
	}},
	{"fail", `echo n=%d; exit $((1 + %[1]d %% 3))`, 1, nil},
	{"stopped", `echo up n=%d; exec sleep 600`, -1, func(out string, i int) error {
		return wantLines(out, []string{fmt.Sprintf("up n=%d", i)}, "")
	}},
}

// wantLines checks that out's lines start with prefixes, the first ending in suffix.
func wantLines(out string, prefixes []string, suffix string) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(prefixes) {
		return fmt.Errorf("stdout %q: want %d lines", out, len(prefixes))
	}
	for k, p := range prefixes {
		if !strings.HasPrefix(lines[k], p) || (k == 0 && !strings.HasSuffix(lines[k], suffix)) {
			return fmt.Errorf("stdout %q: line %d does not start with %q", out, k, p)
		}
	}
	return nil
}

// kindOf is the kind of the burst's i-th task: 4 in 10 quick, 2 each of the others.
func kindOf(i int) soakKind {
	switch i % 10 {
	case 0, 1, 2, 3:
		return soakKinds[0]
	case 4, 5:
		return soakKinds[1]
	case 6, 7:
		return soakKinds[2]
	default:
		return soakKinds[3]
	}
}
