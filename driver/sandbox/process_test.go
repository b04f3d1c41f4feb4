package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// alive tells whether a process runs: a zombie, dead but not yet reaped by
// whichever process adopted it, does not.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}
