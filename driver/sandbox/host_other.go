//go:build !unix

package sandbox

import (
	"errors"
	"os"
)

var errNotUnix = errors.New("not supported on this platform")

func reapOrphans(Ref, string) bool { return false }

// Reap kills what is left of a run's process group; not on this platform.
func Reap(Ref, string) int               { return 0 }
func openFifo(Ref) (*os.File, error)     { return nil, errNotUnix }
func ownerOf(*os.File) (int, int, error) { return 0, 0, errNotUnix }
func chown(string, int, int) error       { return errNotUnix }
