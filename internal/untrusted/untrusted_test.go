package untrusted

import (
	"bytes"
	"strings"
	"testing"
	"unicode"
)

// hostile is what a sandbox names its files to forge log lines and rewrite
// an operator's terminal.
const hostile = "ok\nlevel=ERROR msg=forged\r\x1b[2J\x1b]0;title\x07\u202egnp.exe\x00\xff"

// raw reports the first control or non-printing character in s, if any.
func raw(s string) (rune, bool) {
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) && r != ' ' {
			return r, true
		}
	}
	return 0, false
}

func TestNameAndTextEscapeAndBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		quote func(string) string
		limit int
	}{{"Name", Name, MaxName}, {"Text", Text, MaxText}} {
		for _, in := range []string{hostile, strings.Repeat(hostile, 1000), strings.Repeat("\x1b", 100000), "plain/name"} {
			got := tc.quote(in)
			if r, ok := raw(got); ok {
				t.Errorf("%s(%.20q...) kept %U raw: %q", tc.name, in, r, got)
			}
			// The quoted text plus the length note.
			if len(got) > tc.limit+len(`... (100000 bytes)`) {
				t.Errorf("%s of %d bytes is %d bytes: %.80q", tc.name, len(in), len(got), got)
			}
			if !strings.HasPrefix(got, `"`) {
				t.Errorf("%s(%.20q) = %.40q: not quoted", tc.name, in, got)
			}
		}
	}
	if got := Name("local/out.txt"); got != `"local/out.txt"` {
		t.Errorf("a plain name: %s", got)
	}
	if got := Name(strings.Repeat("a", 1000)); !strings.HasSuffix(got, `"... (1000 bytes)`) {
		t.Errorf("a cut name does not say its length: %s", got)
	}
}

func TestMessageEscapesWhatSlippedThroughAndBounds(t *testing.T) {
	if m := "Copied results back from sandbox 0123abcd: 2 files, 10 bytes"; Message(m) != m {
		t.Errorf("a clean message changed: %q", Message(m))
	}
	quoted := "Follow command: sandbox 0123abcd tampered with " + Name(hostile) + ": is a FIFO"
	if Message(quoted) != quoted {
		t.Errorf("a message with a quoted name changed: %q -> %q", quoted, Message(quoted))
	}
	for _, in := range []string{"tampered with " + hostile, strings.Repeat(hostile, 1000)} {
		got := Message(in)
		if r, ok := raw(got); ok {
			t.Errorf("Message kept %U raw: %.80q", r, got)
		}
		if len(got) > MaxMessage {
			t.Errorf("Message of %d bytes is %d bytes", len(in), len(got))
		}
	}
}

func TestBufferKeepsAtMostMax(t *testing.T) {
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for _, tail := range []bool{false, true} {
		b := &Buffer{Tail: tail}
		if _, err := b.Write([]byte("first\n")); err != nil {
			t.Fatal(err)
		}
		for range 16 {
			if n, err := b.Write(chunk); n != len(chunk) || err != nil {
				t.Fatalf("write: %d %v", n, err)
			}
		}
		if _, err := b.Write([]byte("\nlast")); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if len(got) != DefaultMax || !b.Cut() || b.Seen() != 16<<20+11 {
			t.Fatalf("tail %v: kept %d bytes (cut %v, seen %d), want %d", tail, len(got), b.Cut(), b.Seen(), DefaultMax)
		}
		if kept := strings.HasPrefix(got, "first\n"); kept == tail {
			t.Errorf("tail %v: the first line kept: %v", tail, kept)
		}
		if kept := strings.HasSuffix(got, "\nlast"); kept != tail {
			t.Errorf("tail %v: the last line kept: %v", tail, kept)
		}
		if q := b.Quoted(); len(q) > MaxText+64 || !strings.Contains(q, "more bytes dropped") {
			t.Errorf("quoted: %d bytes %.80q", len(q), q)
		}
	}
	var small Buffer
	_, _ = small.Write([]byte("  kill: (12) - No such process\n"))
	if small.Cut() || small.Quoted() != `"kill: (12) - No such process"` {
		t.Errorf("small output: cut %v, %s", small.Cut(), small.Quoted())
	}
	if (&Buffer{}).Quoted() != "" {
		t.Error("an empty buffer quotes as something")
	}
}
