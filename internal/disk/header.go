package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Formats hutch passes to QEMU. Nothing else is ever named: a format
// QEMU would have to probe, or one that can point at other files in ways
// hutch does not check (vmdk extents, vhdx parents), is refused.
const (
	Raw   = "raw"
	QCOW2 = "qcow2"
)

// qcow2Magic starts every qcow2 file: "QFI\xfb".
const qcow2Magic = 0x514649fb

// qcow2 header fields and extensions hutch reads (QEMU's docs/interop/qcow2.txt).
const (
	qcow2IncompatDataFile = 1 << 2 // external data file
	extEnd                = 0x00000000
	extBackingFormat      = 0xe2792aca
	extDataFile           = 0x44415441
	maxBackingName        = 1023 // QEMU's own limit
	maxHeader             = 64 << 10
)

// Header is what hutch reads from an image's first bytes: enough to name
// every file QEMU would open for it, without running qemu-img on it.
type Header struct {
	Format string
	// Size is the virtual disk size in bytes (a raw file's own size).
	Size uint64
	// Backing is the backing file name as written in a qcow2 header, and
	// BackingFormat its format extension; both empty without one.
	Backing       string
	BackingFormat string
	// DataFile is set when the image keeps its data in another file.
	DataFile bool
}

// IsQCOW2 reports whether b starts like a qcow2 image.
func IsQCOW2(b []byte) bool {
	return len(b) >= 4 && binary.BigEndian.Uint32(b) == qcow2Magic
}

// ParseQCOW2 reads a qcow2 header from r (the image file, at offset 0).
// Every length and offset in it is treated as hostile: a guest may have
// written these bytes.
func ParseQCOW2(r io.ReaderAt) (Header, error) {
	buf := make([]byte, maxHeader)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Header{}, fmt.Errorf("read qcow2 header: %w", err)
	}
	buf = buf[:n]
	if len(buf) < 8 || !IsQCOW2(buf) {
		return Header{}, errors.New("not a qcow2 image (bad magic)")
	}
	be := binary.BigEndian
	version := be.Uint32(buf[4:])
	if version != 2 && version != 3 {
		return Header{}, fmt.Errorf("qcow2 version %d: only versions 2 and 3 are supported", version)
	}
	if len(buf) < 72 {
		return Header{}, errors.New("qcow2 header is truncated")
	}
	h := Header{Format: QCOW2, Size: be.Uint64(buf[24:])}
	backingOff, backingLen := be.Uint64(buf[8:]), be.Uint32(buf[16:])
	headerLen := uint64(72)
	if version == 3 {
		if len(buf) < 104 {
			return Header{}, errors.New("qcow2 v3 header is truncated")
		}
		if be.Uint64(buf[72:])&qcow2IncompatDataFile != 0 {
			h.DataFile = true
		}
		headerLen = uint64(be.Uint32(buf[100:]))
		if headerLen < 104 || headerLen > uint64(len(buf)) {
			return Header{}, fmt.Errorf("qcow2 header length %d is out of range", headerLen)
		}
	}
	if backingOff != 0 {
		if backingLen == 0 || backingLen > maxBackingName {
			return Header{}, fmt.Errorf("qcow2 backing file name of %d bytes is out of range", backingLen)
		}
		if backingOff > uint64(len(buf)) || backingOff+uint64(backingLen) > uint64(len(buf)) {
			return Header{}, errors.New("qcow2 backing file name lies outside the header")
		}
		h.Backing = string(buf[backingOff : backingOff+uint64(backingLen)])
		if strings.IndexByte(h.Backing, 0) >= 0 {
			return Header{}, errors.New("qcow2 backing file name contains a NUL byte")
		}
	}
	// Header extensions follow the header, each a type, a length and data
	// padded to 8 bytes, until the end marker.
	for off := headerLen; ; {
		if off+8 > uint64(len(buf)) {
			return Header{}, errors.New("qcow2 header extensions run past the header")
		}
		typ, l := be.Uint32(buf[off:]), uint64(be.Uint32(buf[off+4:]))
		if typ == extEnd {
			break
		}
		data := off + 8
		if data+l > uint64(len(buf)) {
			return Header{}, errors.New("qcow2 header extension runs past the header")
		}
		switch typ {
		case extBackingFormat:
			h.BackingFormat = string(buf[data : data+l])
		case extDataFile:
			h.DataFile = true
		}
		off = data + (l+7)&^7
	}
	return h, nil
}
