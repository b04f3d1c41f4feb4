package allocfs

import (
	"errors"
	"io/fs"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attrs are what a copied file gets besides its content.
type Attrs struct {
	Perm     uint32 // permission bits with setuid, setgid and sticky
	UID, GID int    // owner; -1 keeps the plugin's
	MTime    int64  // modification (and access) time, ns since the epoch
}

// CopyFile copies the regular file name in src (refused as Handle.Open
// refuses: anything but a regular file, a second hard link unless accepted)
// to dstName in dst, which must not exist (else an error matching
// fs.ErrExist): at most limit bytes, then the owner, mode and times of a,
// all set through the new file's descriptor. On any failure it removes what
// it created. Neither file is ever reached through a path.
func CopyFile(src *Handle, name string, dst *Handle, dstName string, limit int64, a Attrs) (int64, error) {
	in, err := src.openRegular(name)
	if err != nil {
		return 0, err
	}
	defer unix.Close(in)
	out, err := dst.create(dstName, a.Perm, a.UID, a.GID)
	if err != nil {
		return 0, err
	}
	n, err := copyData(out, in, limit)
	if err != nil {
		err = &fs.PathError{Op: "copy", Path: src.d.pathOf(src.relOf(name)), Err: err}
	} else if err = futimens(out, a.MTime); err != nil {
		err = &fs.PathError{Op: "utimes", Path: dst.d.pathOf(dst.relOf(dstName)), Err: err}
	}
	if cerr := unix.Close(out); err == nil && cerr != nil {
		err = &fs.PathError{Op: "close", Path: dst.d.pathOf(dst.relOf(dstName)), Err: cerr}
	}
	if err != nil {
		_ = unix.Unlinkat(dst.fd, dstName, 0)
		return 0, err
	}
	return n, nil
}

// smallFile is the size up to which a file is copied with read and write:
// for a few KiB, copy_file_range costs more than the two calls.
const smallFile = 64 << 10

var copyBufs = sync.Pool{New: func() any { return new([smallFile]byte) }}

// copyData copies at most limit bytes from in to out: copy_file_range for a
// large file (where the kernel can, else read and write), read and write
// for a small one. It stops early at the end of in.
func copyData(out, in int, limit int64) (int64, error) {
	var n int64
	if limit > smallFile {
		for n < limit {
			m, err := unix.CopyFileRange(in, nil, out, nil, int(min(limit-n, 1<<30)), 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				if n == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
					errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)) {
					break // not between these files: read and write
				}
				return n, err
			}
			if m == 0 {
				return n, nil
			}
			n += int64(m)
		}
	}
	buf := copyBufs.Get().(*[smallFile]byte)
	defer copyBufs.Put(buf)
	for n < limit {
		m, err := unix.Read(in, buf[:min(int64(len(buf)), limit-n)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil
		}
		for w := 0; w < m; {
			k, err := unix.Write(out, buf[w:m])
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return n, err
			}
			w += k
		}
		n += int64(m)
	}
	return n, nil
}

// futimens is utimensat(fd, NULL, times, 0): the file fd is open on, by no
// path.
func futimens(fd int, mtime int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(mtime), unix.NsecToTimespec(mtime)}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
