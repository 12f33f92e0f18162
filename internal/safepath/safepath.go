// Package safepath decides whether offpeak may trust a file it is about to
// run or read as root (a plugin binary, a policy file, a drop-in
// directory): only if nobody but root, or the user running offpeak, can
// change it. The rule is the one sshd's StrictModes applies to its keys.
//
// The file, and every directory from it up to /, must be owned by root or
// by the running user, and must not be writable by group or others. One
// exception, in the walk above the file or directory asked about: a
// directory owned by root with the sticky bit (such as /tmp) counts as
// safe, since nobody else can rename or remove what root or the user put
// in it; so trees below /tmp (offpeak --root /tmp/…) work. Symbolic links
// are followed: the path as given and the path it resolves to must both
// pass.
package safepath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal, for errors.Is.
var ErrUnsafe = errors.New("unsafe permissions")

// Error names the file or directory at fault, its mode and its owner.
type Error struct {
	// Path is what was asked about; At is the file or directory at fault
	// (Path itself or one of the directories above it).
	Path, At string
	Mode     fs.FileMode
	UID      uint32
	// Why is "writable by group or others" or "owned by uid N".
	Why string
}

func (e *Error) Error() string {
	where := e.At
	if e.At != e.Path {
		where = fmt.Sprintf("%s (above %s)", e.At, e.Path)
	}
	return fmt.Sprintf("%s: %s is %s (mode %04o %s, owner uid %d); offpeak trusts only what nobody but root, or the user running it, can change",
		ErrUnsafe, where, e.Why, permBits(e.Mode), e.Mode, e.UID)
}

func (e *Error) Unwrap() error { return ErrUnsafe }

// permBits is the mode as chmod takes it: permissions plus setuid, setgid
// and sticky.
func permBits(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

// Check returns nil when path and every directory above it are safe (see
// the package comment), an *Error wrapping ErrUnsafe when one is not, and
// the stat error when one cannot be read.
func Check(path string) error {
	return check(path, os.Geteuid())
}

func check(path string, euid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := checkChain(abs, abs, euid); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	if real != abs {
		return checkChain(abs, real, euid)
	}
	return nil
}

// checkChain checks p and each directory above it up to /.
func checkChain(asked, p string, euid int) error {
	self := true
	for {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := checkOne(asked, p, fi, self, euid); err != nil {
			return err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p, self = parent, false
	}
}

func checkOne(asked, p string, fi fs.FileInfo, self bool, euid int) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: no owner information", ErrUnsafe, p)
	}
	fail := func(why string) error {
		return &Error{Path: asked, At: p, Mode: fi.Mode(), UID: st.Uid, Why: why}
	}
	if st.Uid != 0 && int(st.Uid) != euid {
		if euid == 0 {
			return fail(fmt.Sprintf("owned by uid %d, not root", st.Uid))
		}
		return fail(fmt.Sprintf("owned by uid %d, neither root nor uid %d running offpeak", st.Uid, euid))
	}
	if fi.Mode().Perm()&0o022 == 0 {
		return nil
	}
	if !self && fi.IsDir() && fi.Mode()&fs.ModeSticky != 0 && st.Uid == 0 {
		return nil
	}
	return fail("writable by group or others")
}
