package cloudinit

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"time"
)

// An ISO 9660 image as small as a NoCloud seed needs: one root directory
// holding a few small files, no Rock Ridge or Joliet. Linux's isofs (the
// default map=normal) shows a name lower-cased with its ";1" version
// dropped, so "user-data;1" reads back as user-data.

const sector = 2048

// File is one file of the image's root directory.
type File struct {
	Name string
	Data []byte
}

// WriteISO returns an ISO 9660 image labelled label whose root directory
// holds files. Names must be short (at most 30 bytes) and unique.
func WriteISO(label string, files []File, now time.Time) ([]byte, error) {
	if len(label) > 32 {
		return nil, fmt.Errorf("iso label %q: longer than 32 bytes", label)
	}
	files = append([]File(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for i, f := range files {
		if f.Name == "" || len(f.Name) > 30 {
			return nil, fmt.Errorf("iso file name %q: give 1 to 30 bytes", f.Name)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return nil, fmt.Errorf("iso file name %q: given twice", f.Name)
		}
	}
	// Layout: system area (0-15), primary descriptor (16), terminator
	// (17), little- and big-endian path tables (18, 19), the root
	// directory (20), then the files, each from a sector of its own.
	const pvdAt, termAt, lPathAt, mPathAt, rootAt = 16, 17, 18, 19, 20
	var root bytes.Buffer
	root.Write(dirRecord([]byte{0}, rootAt, sector, true, now))
	root.Write(dirRecord([]byte{1}, rootAt, sector, true, now))
	next := uint32(rootAt + 1)
	extents := make([]uint32, len(files))
	for i, f := range files {
		extents[i] = next
		next += uint32((len(f.Data) + sector - 1) / sector)
		root.Write(dirRecord([]byte(f.Name+";1"), extents[i], uint32(len(f.Data)), false, now))
	}
	if root.Len() > sector {
		return nil, fmt.Errorf("iso: %d files do not fit one directory sector", len(files))
	}
	total := next
	img := make([]byte, int(total)*sector)

	pvd := img[pvdAt*sector : (pvdAt+1)*sector]
	pvd[0] = 1
	copy(pvd[1:6], "CD001")
	pvd[6] = 1
	pad(pvd[8:40], "")
	pad(pvd[40:72], label)
	both32(pvd[80:88], total)
	both16(pvd[120:124], 1) // volume set size
	both16(pvd[124:128], 1) // volume sequence number
	both16(pvd[128:132], sector)
	both32(pvd[132:140], 10) // path table size: the root's entry alone
	binary.LittleEndian.PutUint32(pvd[140:144], lPathAt)
	binary.BigEndian.PutUint32(pvd[148:152], mPathAt)
	copy(pvd[156:190], dirRecord([]byte{0}, rootAt, sector, true, now))
	for _, r := range [][2]int{{190, 318}, {318, 446}, {446, 574}, {574, 702}, {702, 739}, {739, 776}, {776, 813}} {
		pad(pvd[r[0]:r[1]], "")
	}
	stamp := []byte(now.UTC().Format("20060102150405") + "00")
	copy(pvd[813:830], append(stamp, 0)) // created
	copy(pvd[830:847], append(stamp, 0)) // modified
	copy(pvd[847:864], "0000000000000000")
	copy(pvd[864:881], "0000000000000000")
	pvd[881] = 1 // file structure version

	term := img[termAt*sector:]
	term[0] = 255
	copy(term[1:6], "CD001")
	term[6] = 1

	// The path table's one entry: the root, its own parent.
	lpt := img[lPathAt*sector:]
	lpt[0] = 1
	binary.LittleEndian.PutUint32(lpt[2:6], rootAt)
	binary.LittleEndian.PutUint16(lpt[6:8], 1)
	mpt := img[mPathAt*sector:]
	mpt[0] = 1
	binary.BigEndian.PutUint32(mpt[2:6], rootAt)
	binary.BigEndian.PutUint16(mpt[6:8], 1)

	copy(img[rootAt*sector:], root.Bytes())
	for i, f := range files {
		copy(img[int(extents[i])*sector:], f.Data)
	}
	return img, nil
}

// dirRecord is one directory record (ECMA-119 9.1).
func dirRecord(id []byte, extent, size uint32, dir bool, now time.Time) []byte {
	n := 33 + len(id)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	both32(r[2:10], extent)
	both32(r[10:18], size)
	t := now.UTC()
	r[18], r[19], r[20] = byte(t.Year()-1900), byte(t.Month()), byte(t.Day())
	r[21], r[22], r[23] = byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	if dir {
		r[25] = 2
	}
	both16(r[28:32], 1)
	r[32] = byte(len(id))
	copy(r[33:], id)
	return r
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b[0:2], v)
	binary.BigEndian.PutUint16(b[2:4], v)
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b[0:4], v)
	binary.BigEndian.PutUint32(b[4:8], v)
}

// pad fills b with s and then spaces, as ISO 9660 text fields are.
func pad(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}
