package plugin

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

const (
	// MaxConfigSize bounds a config's encoded size. A plugin block or a task's
	// config is a few hundred bytes; the bound caps what one request can make
	// the decoder allocate (a list of n nils becomes a slice of n elements).
	MaxConfigSize = 1 << 20
	// MaxConfigDepth bounds how deeply maps and lists may nest. Decoding
	// recurses once per level, and a request of nested one-element lists
	// would otherwise overflow the goroutine stack, which kills the whole
	// plugin process (recover cannot catch it). Real configs nest 4 levels.
	MaxConfigDepth = 32
)

// scan checks, without recursion and before anything is decoded, that data
// is one msgpack value within MaxConfigSize and MaxConfigDepth, and that no
// header declares more entries or bytes than are left. The msgpack library
// sizes what it allocates by the headers (a 5-byte header can declare 4 GiB),
// so after scan its allocations are bounded by len(data).
func scan(data []byte) error {
	if len(data) > MaxConfigSize {
		return fmt.Errorf("decode config: %d bytes, more than the %d a config may have", len(data), MaxConfigSize)
	}
	r := bytes.NewReader(data)
	d := msgpack.NewDecoder(r) // reads r directly: r.Len() is what is left
	open := []int{1}           // values still to read in each open map or list
	for len(open) > 0 {
		open[len(open)-1]--
		c, err := d.PeekCode()
		n, container := 0, false // n: entries of a map or list, bytes of a string, bin or ext
		switch {
		case err != nil:
		case isMap(c):
			n, err = d.DecodeMapLen()
			n, container = 2*n, true
		case isArray(c):
			n, err = d.DecodeArrayLen()
			container = true
		case msgpcode.IsString(c) || msgpcode.IsBin(c):
			n, err = d.DecodeBytesLen()
		case msgpcode.IsExt(c):
			_, n, err = d.DecodeExtHeader()
		default: // nil, bool or number: fixed sizes
			err = d.Skip()
		}
		if err != nil {
			return invalid(err)
		}
		if n > r.Len() { // every entry takes a byte at least
			return fmt.Errorf("decode config: invalid msgpack: %d entries or bytes declared with %d bytes left", n, r.Len())
		}
		if !container {
			_, _ = r.Seek(int64(n), io.SeekCurrent) // within r: cannot fail
		} else if n > 0 {
			if len(open) > MaxConfigDepth {
				return fmt.Errorf("decode config: maps and lists nest deeper than %d levels", MaxConfigDepth)
			}
			open = append(open, n)
		}
		for len(open) > 0 && open[len(open)-1] == 0 {
			open = open[:len(open)-1]
		}
	}
	if r.Len() != 0 {
		return fmt.Errorf("decode config: %d trailing bytes after the config value", r.Len())
	}
	return nil
}
