package disk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(Tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

func TestResolve(t *testing.T) {
	if _, err := exec.LookPath(Tool); err != nil {
		t.Fatalf("%s not found: install qemu-utils", Tool)
	}
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	qemuImg(t, "create", "-q", "-f", "raw", p("base.raw"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", p("solo.qcow2"), "32M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", p("over.qcow2"))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "json:{\"file.filename\":\"/etc/shadow\"}", p("json.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd://127.0.0.1:10809/x", p("nbd.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+p("data.bin"), p("datafile.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "loop-b.qcow2", p("loop-a.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "loop-a.qcow2", p("loop-b.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "vmdk", "-b", "base.raw", p("vmdk.qcow2"), "16M")
	// A raw disk a guest rewrote: its first bytes are now a qcow2 header
	// naming /etc/shadow as backing.
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/shadow", p("hdr.qcow2"), "16M")
	hdr, _ := os.ReadFile(p("hdr.qcow2"))
	guestRaw := append(hdr, bytes.Repeat([]byte{0}, 1<<20)...)
	os.WriteFile(p("guest.raw"), guestRaw, 0o600)
	syscall.Mkfifo(p("fifo"), 0o600)

	for _, c := range []struct {
		file, format string
		want         []Layer // nil: an error containing err
		size         uint64
		err          string
	}{
		{file: "base.raw", want: []Layer{{p("base.raw"), Raw}}, size: 16 << 20},
		{file: "solo.qcow2", want: []Layer{{p("solo.qcow2"), QCOW2}}, size: 32 << 20},
		{file: "over.qcow2", want: []Layer{{p("over.qcow2"), QCOW2}, {p("base.raw"), Raw}}, size: 16 << 20},
		{file: "guest.raw", format: Raw, want: []Layer{{p("guest.raw"), Raw}}, size: uint64(len(guestRaw))},
		{file: "solo.qcow2", format: Raw, want: []Layer{{p("solo.qcow2"), Raw}}},
		{file: "json.qcow2", err: "json: description, which hutch refuses"},
		{file: "nbd.qcow2", err: `"nbd://127.0.0.1:10809/x" names a protocol`},
		{file: "datafile.qcow2", err: "names an external data file"},
		{file: "loop-a.qcow2", err: "loops back"},
		{file: "vmdk.qcow2", err: "is vmdk; hutch uses only raw and qcow2"},
		{file: "fifo", err: "is not a regular file"},
		{file: "missing", err: "no such file"},
		{file: "base.raw", format: QCOW2, err: "not a qcow2 image"},
	} {
		chain, size, err := Resolve(p(c.file), c.format, Rules{})
		if c.want == nil {
			if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Resolve(%s, %q) = %+v, %v; want one line with %q", c.file, c.format, chain, err, c.err)
			}
			continue
		}
		if err != nil || len(chain) != len(c.want) {
			t.Errorf("Resolve(%s, %q) = %+v, %v; want %+v", c.file, c.format, chain, err, c.want)
			continue
		}
		for i := range chain {
			if chain[i] != c.want[i] {
				t.Errorf("Resolve(%s, %q) layer %d = %+v, want %+v", c.file, c.format, i, chain[i], c.want[i])
			}
		}
		if c.size != 0 && size != c.size {
			t.Errorf("Resolve(%s) size = %d, want %d", c.file, size, c.size)
		}
	}
	if !LooksQCOW2(p("guest.raw")) || LooksQCOW2(p("base.raw")) || LooksQCOW2(p("fifo")) {
		t.Error("LooksQCOW2 misjudges the magic")
	}
}

// In system mode root can open anything: a backing file belonging to
// someone other than the image's owner is refused.
func TestResolveSameOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files: run it as root (make test does)")
	}
	dir := t.TempDir()
	base, over := filepath.Join(dir, "base.raw"), filepath.Join(dir, "over.qcow2")
	qemuImg(t, "create", "-q", "-f", "raw", base, "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, over)
	if err := os.Chown(over, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Resolve(over, QCOW2, Rules{SameOwner: true}); err == nil || !strings.Contains(err.Error(), "belongs to uid 0, not to the image's owner (uid 4242)") {
		t.Errorf("a root-owned backing under uid 4242's image: %v", err)
	}
	if _, _, err := Resolve(over, QCOW2, Rules{}); err != nil {
		t.Errorf("without the rule: %v", err)
	}
	os.Chown(base, 4242, 4242)
	if _, _, err := Resolve(over, QCOW2, Rules{SameOwner: true}); err != nil {
		t.Errorf("same owner: %v", err)
	}
}

// The overlay is made without qemu-img opening the base: a base whose
// header names an NBD server must not make qemu-img dial it.
func TestCreateOverlayNeverOpensTheBase(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "nbd.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd://127.0.0.1:1/x", base, "16M")
	ov := filepath.Join(dir, "ov.qcow2")
	if err := CreateOverlay(base, QCOW2, 16<<20, ov); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(ov)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ParseQCOW2(f)
	if err != nil || h.Backing != base || h.BackingFormat != QCOW2 || h.Size != 16<<20 {
		t.Errorf("overlay header %+v, %v", h, err)
	}
}

func FuzzParseQCOW2(f *testing.F) {
	for _, n := range []string{"solo", "json"} {
		dir := f.TempDir()
		p := filepath.Join(dir, n)
		args := []string{"create", "-q", "-f", "qcow2", p, "1M"}
		if n == "json" {
			args = []string{"create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "json:{}", p, "1M"}
		}
		if out, err := exec.Command(Tool, args...).CombinedOutput(); err != nil {
			f.Fatalf("qemu-img: %v: %s", err, out)
		}
		b, _ := os.ReadFile(p)
		f.Add(b[:min(len(b), 4096)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseQCOW2(bytes.NewReader(b))
		if err == nil && (h.Format != QCOW2 || len(h.Backing) > maxBackingName) {
			t.Fatalf("ParseQCOW2 accepted %+v", h)
		}
	})
}

// Snapshots of hutch's own qcow2 never open what its header names.
func TestSnapshotPinsTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ov.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd://127.0.0.1:1/x", p, "16M")
	for _, n := range []string{"one", "two"} {
		if _, err := Snapshot(p, "-c", n); err != nil {
			t.Fatal(err)
		}
	}
	if names, err := SnapshotNames(p); err != nil || strings.Join(names, ",") != "one,two" {
		t.Fatalf("SnapshotNames = %v, %v", names, err)
	}
	if _, err := Snapshot(p, "-d", "one"); err != nil {
		t.Fatal(err)
	}
	if names, _ := SnapshotNames(p); strings.Join(names, ",") != "two" {
		t.Fatalf("after -d one: %v", names)
	}
}
