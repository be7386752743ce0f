// Package disk prepares a VM's disks: it reads image formats and makes the
// qcow2 overlays that keep base images unwritten.
package disk

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Tool is the image utility hutch drives.
const Tool = "qemu-img"

// CreateOverlay makes a qcow2 at path whose backing file is base, so the
// VM writes only to path. qemu-img is told the base's format and size
// and not to open it (-u): it never reads a header hutch did not parse,
// and never runs as root on an untrusted image.
func CreateOverlay(base, baseFormat string, size uint64, path string) error {
	abs, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("resolve image path: %w", err)
	}
	out, err := exec.Command(Tool, "create", "-q", "-u", "-f", "qcow2", "-F", baseFormat, "-b", abs, path,
		strconv.FormatUint(size, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create overlay over %s: %s", base, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateBlank makes an empty disk of size bytes at path.
func CreateBlank(format string, size uint64, path string) error {
	out, err := exec.Command(Tool, "create", "-q", "-f", format, path, strconv.FormatUint(size, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create a blank %s disk: %s", format, strings.TrimSpace(string(out)))
	}
	return nil
}

// Resize grows a qcow2 disk hutch made (an overlay or a blank disk) to
// size bytes; the format is named, so qemu-img reads only that header.
func Resize(path string, size uint64) error {
	out, err := exec.Command(Tool, "resize", "-q", "-f", QCOW2, path, strconv.FormatUint(size, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resize %s: %s", path, strings.TrimSpace(string(out)))
	}
	return nil
}

// Snapshot runs one qemu-img snapshot operation (-c, -a, -d or -l) on a
// qcow2 disk. The image is named as a json: description with no backing,
// so qemu-img opens that one file as qcow2 and nothing its header names.
func Snapshot(path, op, name string) (string, error) {
	spec, err := json.Marshal(map[string]any{"driver": QCOW2, "file": map[string]string{"driver": "file", "filename": path}, "backing": nil})
	if err != nil {
		return "", err
	}
	args := []string{"snapshot", "-q", op}
	if op != "-l" {
		args = append(args, name)
	}
	out, err := exec.Command(Tool, append(args, "json:"+string(spec))...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("snapshot %s of %s: %s", op, path, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// SnapshotNames lists the internal snapshots of a qcow2 disk by name.
func SnapshotNames(path string) ([]string, error) {
	out, err := Snapshot(path, "-l", "")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// ID TAG VM-SIZE DATE ... under a two-line header.
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] != "ID" && f[0] != "Snapshot" {
			names = append(names, f[1])
		}
	}
	return names, nil
}

// Layer is one file of an image's backing chain.
type Layer struct {
	Path   string `json:"path"`
	Format string `json:"format"`
}

// maxChain bounds a backing chain; QEMU's own limit is far higher, no
// real image needs more.
const maxChain = 16

// Rules are what a backing chain may reach. Whatever a header names is a
// request from whoever wrote it, possibly a guest: hutch follows it only to
// plain regular files the caller could open themselves.
type Rules struct {
	// SameOwner requires every backing file to belong to the owner of the
	// top image: root can open anything, so in system mode "could open"
	// means "owned by whoever owns the image".
	SameOwner bool
}

// Resolve reads the image at path and every backing file below it with
// hutch's own header parser, top first. format is Raw or QCOW2, or ""
// to read it from the image's first bytes: only for a base that no VM
// writes (a guest can write a qcow2 header onto a raw disk it was given).
// The size is the top's virtual size.
func Resolve(path, format string, r Rules) ([]Layer, uint64, error) {
	var chain []Layer
	var size uint64
	var owner uint32
	seen := map[string]bool{}
	for depth := 0; ; depth++ {
		if depth == maxChain {
			return nil, 0, fmt.Errorf("%s: backing chain deeper than %d images; flatten it (hutch image import)", chain[0].Path, maxChain)
		}
		if seen[path] {
			return nil, 0, fmt.Errorf("%s: backing chain loops back to %s", chain[0].Path, path)
		}
		seen[path] = true
		h, uid, err := readHeader(path, format)
		if err != nil {
			return nil, 0, err
		}
		if depth == 0 {
			size, owner = h.Size, uid
		} else if r.SameOwner && uid != owner {
			return nil, 0, fmt.Errorf("%s: backing file %s belongs to uid %d, not to the image's owner (uid %d); hutch follows only the owner's files", chain[0].Path, path, uid, owner)
		}
		chain = append(chain, Layer{Path: path, Format: h.Format})
		if h.DataFile {
			return nil, 0, fmt.Errorf("%s: its qcow2 header names an external data file, which hutch refuses (a header must not add files); convert it with qemu-img convert -O qcow2", path)
		}
		if h.Backing == "" {
			return chain, size, nil
		}
		next, err := backingPath(path, h.Backing)
		if err != nil {
			return nil, 0, err
		}
		switch h.BackingFormat {
		case "":
			format = ""
		case Raw, QCOW2:
			format = h.BackingFormat
		default:
			return nil, 0, fmt.Errorf("%s: backing file %s is %s; hutch uses only raw and qcow2 (convert it with qemu-img convert -O qcow2)", path, next, h.BackingFormat)
		}
		path = next
	}
}

// backingPath checks a backing file name from a header: a plain path,
// relative ones taken from the image's directory as QEMU takes them.
// json: descriptions and protocols (nbd:, http:...) would make QEMU or
// qemu-img dial out or open what hutch never saw.
func backingPath(image, name string) (string, error) {
	if strings.HasPrefix(name, "json:") {
		return "", fmt.Errorf("%s: its backing file is a json: description, which hutch refuses; flatten the image (hutch image import, or qemu-img convert)", image)
	}
	if colon := strings.IndexByte(name, ':'); colon >= 0 && !strings.Contains(name[:colon], "/") {
		return "", fmt.Errorf("%s: its backing file %q names a protocol, which hutch refuses; flatten the image (qemu-img convert)", image, name)
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(filepath.Dir(image), name)
	}
	return filepath.Clean(name), nil
}

// LooksQCOW2 reports whether the file at path starts with a qcow2 magic:
// a hint for an error message, never a reason to open anything.
func LooksQCOW2(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 4)
	n, _ := f.ReadAt(b, 0)
	return IsQCOW2(b[:n])
}

// readHeader opens path without blocking (a FIFO must not hang hutch),
// checks it is a regular file, and reads its header as format, or
// detects the format when format is "".
func readHeader(path, format string) (Header, uint32, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return Header{}, 0, fmt.Errorf("open image %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Header{}, 0, fmt.Errorf("stat image %s: %w", path, err)
	}
	uid := fi.Sys().(*syscall.Stat_t).Uid
	if isBlock := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0; isBlock && format == Raw {
		return Header{Format: Raw}, uid, nil // a block device given as a raw disk
	}
	if !fi.Mode().IsRegular() {
		return Header{}, 0, fmt.Errorf("%s is not a regular file (%s): give an image file", path, fi.Mode().Type())
	}
	magic := make([]byte, 4)
	n, _ := f.ReadAt(magic, 0)
	if format == "" {
		format = Raw
		if IsQCOW2(magic[:n]) {
			format = QCOW2
		}
	}
	if format == Raw {
		return Header{Format: Raw, Size: uint64(fi.Size())}, uid, nil
	}
	h, err := ParseQCOW2(f)
	if err != nil {
		return Header{}, 0, fmt.Errorf("%s: %w", path, err)
	}
	return h, uid, nil
}
