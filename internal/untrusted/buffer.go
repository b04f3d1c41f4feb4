package untrusted

import (
	"strconv"
	"strings"
	"sync"
)

// DefaultMax is what a Buffer keeps when its Max is zero: a few lines of a
// shell's error, never the megabytes a hostile command prints.
const DefaultMax = 4 << 10

// Buffer is an io.Writer for the output of an exec into a sandbox: it keeps
// at most Max bytes (the first, or with Tail the last) and drops the rest,
// remembering how much it saw. Write never fails and never blocks, so the
// exec is read to its end (it is not left blocked on a full pipe) while the
// plugin's memory stays bounded whatever the sandbox prints. It is safe for
// concurrent use: an exec may still write after the caller gave up on it.
type Buffer struct {
	Max  int  // bytes kept; 0 is DefaultMax
	Tail bool // keep the last Max bytes, not the first

	mu   sync.Mutex
	b    []byte
	seen int64
}

func (b *Buffer) max() int {
	if b.Max > 0 {
		return b.Max
	}
	return DefaultMax
}

// Write keeps what fits of p and reports all of it written.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seen += int64(len(p))
	limit := b.max()
	switch {
	case !b.Tail:
		if room := limit - len(b.b); room > 0 {
			b.b = append(b.b, p[:min(room, len(p))]...)
		}
	case len(p) >= limit:
		b.b = append(b.b[:0], p[len(p)-limit:]...)
	default:
		if over := len(b.b) + len(p) - limit; over > 0 {
			b.b = b.b[:copy(b.b, b.b[over:])]
		}
		b.b = append(b.b, p...)
	}
	return len(p), nil
}

// Bytes is a copy of what was kept.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.b...)
}

// String is what was kept, as written: not for a message (see Quoted).
func (b *Buffer) String() string { return string(b.Bytes()) }

// Cut reports whether bytes were dropped.
func (b *Buffer) Cut() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen > int64(len(b.b))
}

// Seen is how many bytes were written in all.
func (b *Buffer) Seen() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen
}

// Quoted is what was kept, without surrounding white space, quoted for a
// message (Text), saying how much was dropped; "" when nothing was written.
func (b *Buffer) Quoted() string {
	b.mu.Lock()
	kept, seen := string(b.b), b.seen
	b.mu.Unlock()
	if seen == 0 {
		return ""
	}
	q := Text(strings.TrimSpace(kept))
	if dropped := seen - int64(len(kept)); dropped > 0 {
		q += " (" + strconv.FormatInt(dropped, 10) + " more bytes dropped)"
	}
	return q
}
