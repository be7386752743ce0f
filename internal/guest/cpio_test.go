package guest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

type cpioEntry struct {
	name         string
	ino, mode    uint32
	uid, gid     uint32
	nlink, mtime uint32
	rmaj, rmin   uint32
	data         []byte
}

// parseNewc decodes a gzip-compressed newc archive independently of the
// writer, checking the alignment rules the kernel relies on.
func parseNewc(t *testing.T, gz []byte) []cpioEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(raw) {
			t.Fatalf("truncated header at %d", off)
		}
		h := raw[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		nameEnd := off + 110 + namesize
		if raw[nameEnd-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", off)
		}
		name := string(raw[off+110 : nameEnd-1])
		dataOff := align(nameEnd)
		for _, b := range raw[nameEnd:dataOff] {
			if b != 0 {
				t.Fatalf("non-zero name padding after %s", name)
			}
		}
		if name == "TRAILER!!!" {
			if rest := raw[dataOff:]; len(rest) != 0 {
				t.Fatalf("%d bytes after trailer", len(rest))
			}
			return out
		}
		if f[12] != 0 {
			t.Fatalf("%s: check field %d, want 0", name, f[12])
		}
		out = append(out, cpioEntry{
			name: name, ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			rmaj: f[9], rmin: f[10],
			data: append([]byte(nil), raw[dataOff:dataOff+filesize]...),
		})
		off = align(dataOff + filesize)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	a := NewArchive(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Dir("/tmp", 0o777|os.ModeSticky))
	must(a.File("/etc/hello", 0o644, []byte("hi\n")))    // etc created implicitly
	must(a.File("a/b/c.sh", 0o755, []byte("#!/bin/sh"))) // a, a/b implicit
	must(a.Symlink("bin/sh", "busybox"))
	must(a.CharDev("dev/console", 0o600, 5, 1))
	must(a.File("empty", 0o600, nil))
	must(a.Dir("etc", 0o755)) // same mode as the implicit one: no-op
	must(a.Close())

	want := []struct {
		name  string
		mode  uint32
		nlink uint32
		data  string
	}{
		{"tmp", 0o041777, 2, ""},
		{"etc", 0o040755, 2, ""},
		{"etc/hello", 0o100644, 1, "hi\n"},
		{"a", 0o040755, 2, ""},
		{"a/b", 0o040755, 2, ""},
		{"a/b/c.sh", 0o100755, 1, "#!/bin/sh"},
		{"bin", 0o040755, 2, ""},
		{"bin/sh", 0o120777, 1, "busybox"},
		{"dev", 0o040755, 2, ""},
		{"dev/console", 0o020600, 1, ""},
		{"empty", 0o100600, 1, ""},
	}
	got := parseNewc(t, buf.Bytes())
	if len(got) != len(want) {
		var names []string
		for _, e := range got {
			names = append(names, e.name)
		}
		t.Fatalf("got %d entries %v, want %d", len(got), names, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.name != w.name || g.mode != w.mode || g.nlink != w.nlink || string(g.data) != w.data {
			t.Errorf("entry %d: got %s mode %o nlink %d data %q; want %s mode %o nlink %d data %q",
				i, g.name, g.mode, g.nlink, g.data, w.name, w.mode, w.nlink, w.data)
		}
		if g.ino != uint32(i+1) || g.mtime != 0 || g.uid != 0 || g.gid != 0 {
			t.Errorf("%s: ino %d mtime %d uid %d gid %d; want ino %d and zeros", g.name, g.ino, g.mtime, g.uid, g.gid, i+1)
		}
	}
	if c := got[9]; c.rmaj != 5 || c.rmin != 1 {
		t.Errorf("dev/console rdev %d:%d, want 5:1", c.rmaj, c.rmin)
	}
}

func TestArchiveDeterministic(t *testing.T) {
	build := func() []byte {
		var buf bytes.Buffer
		a := NewArchive(&buf)
		if err := a.File("x/y", 0o644, []byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if !bytes.Equal(build(), build()) {
		t.Fatal("two identical builds differ")
	}
}

func TestArchiveErrors(t *testing.T) {
	a := NewArchive(io.Discard)
	if err := a.File("f", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.File("f", 0o644, nil); err == nil {
		t.Error("duplicate file: no error")
	}
	if err := a.File("f/g", 0o644, nil); err == nil {
		t.Error("file under a regular file: no error")
	}
	if err := a.Dir("d", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := a.Dir("d", 0o755); err == nil {
		t.Error("directory re-added with another mode: no error")
	}
	for _, bad := range []string{"", "/", ".", "TRAILER!!!"} {
		if err := a.File(bad, 0o644, nil); err == nil {
			t.Errorf("name %q: no error", bad)
		}
	}
	if err := a.Symlink("l", ""); err == nil {
		t.Error("empty symlink target: no error")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.File("late", 0o644, nil); err == nil {
		t.Error("write after Close: no error")
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

func TestArchiveWriteError(t *testing.T) {
	a := NewArchive(&failWriter{})
	big := bytes.Repeat([]byte("x"), 1<<20)
	err := a.File("big", 0o644, big)
	if err == nil {
		err = a.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("got %v, want the writer's error", err)
	}
}

// TestArchiveGNUCpio checks the archive against an independent reader. GNU
// cpio is part of every Debian install this project targets; its absence is
// a broken test environment, not a reason to skip.
func TestArchiveGNUCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("GNU cpio not found (apt-get install cpio): %v", err)
	}
	var buf bytes.Buffer
	a := NewArchive(&buf)
	if err := a.File("etc/hello", 0o644, []byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	if err := a.Symlink("bin/sh", "busybox"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = zr
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	if got, want := string(out), "etc\netc/hello\nbin\nbin/sh\n"; got != want {
		t.Fatalf("cpio -t listed %q, want %q", got, want)
	}
}
