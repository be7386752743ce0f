// Package guest builds what a guest boots from: an initramfs holding an
// init program, the kernel modules it needs and any extra files.
package guest

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// newc (SVR4 "070701") is the only cpio format the kernel's initramfs
// unpacker accepts; it carries no checksum, so the check field stays zero.
const (
	newcMagic   = "070701"
	newcTrailer = "TRAILER!!!"

	sIFREG = 0o100000
	sIFDIR = 0o040000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// Archive writes a gzip-compressed newc cpio archive suitable as an
// initramfs.
//
// Output is deterministic: every entry has mtime 0, uid/gid 0 and inode
// numbers assigned in the order entries are added, so the same calls always
// produce the same bytes and a build can be cached by its inputs.
//
// Parent directories are created implicitly with mode 0755 when a child is
// added before them, because the kernel does not create missing parents
// while unpacking. To give a directory another mode, add it with Dir before
// anything inside it. Names are relative to the archive root; a leading "/"
// is ignored. Adding the same name twice is an error, except Dir on an
// existing directory with the same mode, which does nothing.
type Archive struct {
	gz      *gzip.Writer
	ino     uint32
	off     int64
	entries map[string]entry
	err     error
	closed  bool
}

type entry struct {
	typ  uint32
	perm uint32
}

// NewArchive returns an Archive writing compressed output to w. Close must be
// called to finish the archive; it does not close w.
func NewArchive(w io.Writer) *Archive {
	return &Archive{gz: gzip.NewWriter(w), entries: map[string]entry{}}
}

// Dir adds a directory.
func (a *Archive) Dir(name string, mode os.FileMode) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if e, ok := a.entries[n]; ok && e.typ == sIFDIR && e.perm == unixPerm(mode) {
		return nil
	}
	return a.add(n, sIFDIR, mode, nil)
}

// File adds a regular file with the given content.
func (a *Archive) File(name string, mode os.FileMode, data []byte) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	return a.add(n, sIFREG, mode, data)
}

// Symlink adds a symbolic link pointing at target, which is stored as given
// (relative targets resolve from the link's directory, as usual).
func (a *Archive) Symlink(name, target string) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("cpio: symlink %s: empty target", n)
	}
	return a.add(n, sIFLNK, 0o777, []byte(target))
}

// CharDev adds a character device node. The kernel creates it while
// unpacking, which lets an unprivileged build ship nodes such as
// /dev/console that init needs before devtmpfs is mounted.
func (a *Archive) CharDev(name string, mode os.FileMode, major, minor uint32) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	return a.addNode(n, sIFCHR, mode, nil, major, minor)
}

// Close writes the trailer and flushes the gzip stream. The underlying
// writer is left open.
func (a *Archive) Close() error {
	if a.closed {
		return a.err
	}
	a.closed = true
	if a.err == nil {
		// The trailer has inode 0 and nlink 1, as GNU cpio writes it.
		a.err = a.writeEntry(newcTrailer, 0, 0, 1, nil, 0, 0)
	}
	if err := a.gz.Close(); err != nil && a.err == nil {
		a.err = fmt.Errorf("cpio: finish gzip stream: %w", err)
	}
	return a.err
}

func (a *Archive) add(name string, typ uint32, mode os.FileMode, data []byte) error {
	return a.addNode(name, typ, mode, data, 0, 0)
}

func (a *Archive) addNode(name string, typ uint32, mode os.FileMode, data []byte, major, minor uint32) error {
	if a.closed {
		return errors.New("cpio: archive already closed")
	}
	if a.err != nil {
		return a.err
	}
	if _, ok := a.entries[name]; ok {
		return fmt.Errorf("cpio: %s: already in the archive", name)
	}
	if err := a.parents(name); err != nil {
		return err
	}
	nlink := uint32(1)
	if typ == sIFDIR {
		nlink = 2
	}
	a.ino++
	if err := a.writeEntry(name, a.ino, typ|unixPerm(mode), nlink, data, major, minor); err != nil {
		a.err = err
		return err
	}
	a.entries[name] = entry{typ: typ, perm: unixPerm(mode)}
	return nil
}

// parents adds any missing ancestor directories of name, outermost first.
func (a *Archive) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if e, ok := a.entries[dir]; ok {
		if e.typ != sIFDIR {
			return fmt.Errorf("cpio: %s: parent %s is not a directory", name, dir)
		}
		return nil
	}
	if err := a.parents(dir); err != nil {
		return err
	}
	return a.add(dir, sIFDIR, 0o755, nil)
}

func (a *Archive) writeEntry(name string, ino, mode, nlink uint32, data []byte, major, minor uint32) error {
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, len(data))
	}
	var b strings.Builder
	b.WriteString(newcMagic)
	for _, v := range []uint32{
		ino, mode, 0, 0, nlink, 0, // ino, mode, uid, gid, nlink, mtime
		uint32(len(data)), 0, 0, // filesize, devmajor, devminor
		major, minor, // rdevmajor, rdevminor
		uint32(len(name) + 1), 0, // namesize (with NUL), check
	} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	if err := a.write([]byte(b.String())); err != nil {
		return err
	}
	if err := a.pad(); err != nil {
		return err
	}
	if err := a.write(data); err != nil {
		return err
	}
	return a.pad()
}

// pad aligns to 4 bytes: newc requires both the header+name and the data to
// end on a 4-byte boundary.
func (a *Archive) pad() error {
	if r := a.off % 4; r != 0 {
		return a.write(make([]byte, 4-r))
	}
	return nil
}

func (a *Archive) write(p []byte) error {
	n, err := a.gz.Write(p)
	a.off += int64(n)
	if err != nil {
		return fmt.Errorf("cpio: write: %w", err)
	}
	return nil
}

func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)[1:]
	if n == "" || n == newcTrailer {
		return "", fmt.Errorf("cpio: invalid entry name %q", name)
	}
	if strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("cpio: entry name %q contains NUL", name)
	}
	return n, nil
}

// unixPerm maps Go's portable mode bits to the st_mode permission bits.
func unixPerm(m os.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}
