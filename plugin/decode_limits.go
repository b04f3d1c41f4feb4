package plugin

import "fmt"

// MaxConfigDepth bounds how deeply maps and lists may nest in a config. The
// msgpack decoder and assign recurse once per level, and a request of a few
// MiB of nested one-element lists would otherwise overflow the goroutine stack,
// which kills the whole plugin process (recover cannot catch it). Real configs
// nest a handful of levels.
const MaxConfigDepth = 100

// precheck walks the msgpack value in data without recursion and fails when
// maps and lists nest deeper than limit, or a value or container declares more
// bytes or entries than are left. Other malformed data is left for the
// decoder to report.
func precheck(data []byte, limit int) error {
	pending := []uint64{1} // values still to read at each open level
	pos := 0
	// be reads an n-byte big-endian length at pos+off.
	be := func(off, n int) (uint64, bool) {
		if pos+off+n > len(data) {
			return 0, false
		}
		var v uint64
		for _, b := range data[pos+off : pos+off+n] {
			v = v<<8 | uint64(b)
		}
		return v, true
	}
	for len(pending) > 0 && pos < len(data) {
		c := data[pos]
		var size uint64     // bytes of this value, header included (scalars)
		var children uint64 // values inside a map or list
		container := false
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			size = 1
		case c >= 0x80 && c <= 0x8f:
			size, children, container = 1, 2*uint64(c&0x0f), true
		case c >= 0x90 && c <= 0x9f:
			size, children, container = 1, uint64(c&0x0f), true
		case c >= 0xa0 && c <= 0xbf:
			size = 1 + uint64(c&0x1f)
		case c == 0xc4 || c == 0xd9:
			n, ok := be(1, 1)
			if !ok {
				return nil
			}
			size = 2 + n
		case c == 0xc5 || c == 0xda:
			n, ok := be(1, 2)
			if !ok {
				return nil
			}
			size = 3 + n
		case c == 0xc6 || c == 0xdb:
			n, ok := be(1, 4)
			if !ok {
				return nil
			}
			size = 5 + n
		case c == 0xc7:
			n, ok := be(1, 1)
			if !ok {
				return nil
			}
			size = 3 + n
		case c == 0xc8:
			n, ok := be(1, 2)
			if !ok {
				return nil
			}
			size = 4 + n
		case c == 0xc9:
			n, ok := be(1, 4)
			if !ok {
				return nil
			}
			size = 6 + n
		case c == 0xca:
			size = 5
		case c == 0xcb:
			size = 9
		case c == 0xcc || c == 0xd0:
			size = 2
		case c == 0xcd || c == 0xd1:
			size = 3
		case c == 0xce || c == 0xd2:
			size = 5
		case c == 0xcf || c == 0xd3:
			size = 9
		case c == 0xd4:
			size = 3
		case c == 0xd5:
			size = 4
		case c == 0xd6:
			size = 6
		case c == 0xd7:
			size = 10
		case c == 0xd8:
			size = 18
		case c == 0xdc || c == 0xde:
			n, ok := be(1, 2)
			if !ok {
				return nil
			}
			size, children, container = 3, n, true
			if c == 0xde {
				children *= 2
			}
		case c == 0xdd || c == 0xdf:
			n, ok := be(1, 4)
			if !ok {
				return nil
			}
			size, children, container = 5, n, true
			if c == 0xdf {
				children *= 2
			}
		default: // 0xc1, never used: the decoder reports it
			return nil
		}
		if size > uint64(len(data)-pos) {
			// Refuse before the msgpack decoder allocates a bin or ext
			// value's declared length at once: a 5-byte header asks for
			// up to 4 GiB.
			return fmt.Errorf("decode config: invalid msgpack: value of %d bytes with %d bytes left", size, len(data)-pos)
		}
		pos += int(size)
		if children > uint64(len(data)-pos) {
			// Every entry takes at least a byte. Refuse before the msgpack
			// decoder preallocates for a count a 5-byte header can set to
			// 2^32 (it caps that at a million entries, still ~100 MB and
			// seconds of work per request).
			return fmt.Errorf("decode config: invalid msgpack: %d entries declared with %d bytes left", children, len(data)-pos)
		}
		pending[len(pending)-1]--
		if container && children > 0 {
			if len(pending) > limit {
				return fmt.Errorf("decode config: maps and lists nest deeper than %d levels", limit)
			}
			pending = append(pending, children)
		}
		for len(pending) > 0 && pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
		}
	}
	return nil
}
