// Package untrusted makes what a sandbox wrote fit to enter the plugin's
// errors, task events and log lines, and bounds what the plugin keeps of a
// sandbox exec's output.
//
// Anything beneath a sandbox's allocation dir, and anything a command run
// inside it prints, is the hostile command's choice: a file name with a
// newline forges a log line, one with terminal escapes rewrites an
// operator's screen, and a megabyte of output quoted into an error is a
// megabyte the plugin holds, logs and sends to Nomad. So every name and
// every text from a sandbox goes through Name or Text (quoted, so control
// characters are escaped, and cut to a small size) before it enters a
// message; every exec output the plugin reads goes into a Buffer (at most a
// few KiB kept, the rest read and dropped); and Message is the last guard
// where a message leaves the plugin (a task event, a task's exit error).
package untrusted

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sizes, in bytes of the quoted text.
const (
	// MaxName bounds a quoted name or path.
	MaxName = 256
	// MaxText bounds a quoted exec output in a message.
	MaxText = 512
	// MaxMessage bounds a whole event or error message.
	MaxMessage = 2048
)

// Name quotes a name or path from a sandbox for a message: Go-quoted (every
// control character, invalid byte and non-printing rune escaped), at most
// MaxName bytes of quoted text, then how long it was.
func Name(s string) string { return quote(s, MaxName) }

// Text quotes output of a sandbox (an exec's stderr, a line of a log the
// sandbox may have written into) for a message, as Name does, in at most
// MaxText bytes.
func Text(s string) string { return quote(s, MaxText) }

// quote is s Go-quoted in at most limit bytes; when it does not fit, the
// runes that fit and "... (N bytes)", the length of s.
func quote(s string, limit int) string {
	if q := strconv.Quote(s); len(q) <= limit {
		return q
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		piece := strconv.Quote(s[i : i+size])
		piece = piece[1 : len(piece)-1]
		if b.Len()+len(piece)+1 > limit {
			break
		}
		b.WriteString(piece)
		i += size
	}
	b.WriteString(`"... (`)
	b.WriteString(strconv.Itoa(len(s)))
	b.WriteString(" bytes)")
	return b.String()
}

// Message is the last guard for a message that leaves the plugin (a task
// event, a task's exit error): every control character and non-printing
// rune that some path let through is escaped as Go would quote it, and the
// message is cut to MaxMessage bytes. Text already quoted passes unchanged.
func Message(s string) string {
	clean := true
	for _, r := range s {
		if !printable(r) {
			clean = false
			break
		}
	}
	if clean && len(s) <= MaxMessage {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+size]
		if !printable(r) {
			q := strconv.Quote(piece)
			piece = q[1 : len(q)-1]
		}
		if b.Len()+len(piece) > MaxMessage-32 {
			b.WriteString("... (")
			b.WriteString(strconv.Itoa(len(s)))
			b.WriteString(" bytes)")
			break
		}
		b.WriteString(piece)
		i += size
	}
	return b.String()
}

// printable is what Message leaves as it is: what strconv.Quote leaves
// unescaped, less the quote and backslash it escapes only inside quotes.
func printable(r rune) bool {
	return r != utf8.RuneError && (r == ' ' || unicode.IsPrint(r))
}
