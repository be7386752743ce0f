package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/store"
)

func TestNameFor(t *testing.T) {
	for in, want := range map[string]string{
		"/x/debian-12-genericcloud-amd64.qcow2": "debian-12-genericcloud-amd64",
		"disk.img":                              "disk",
		"fedora.raw":                            "fedora",
		"alpine.qcow2.img":                      "alpine",
		"ubuntu-24.04":                          "ubuntu-24.04",
		"IMG.QCOW2":                             "IMG",
	} {
		if got := NameFor(in); got != want {
			t.Errorf("NameFor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"debian12", "ubuntu-24.04", "a_b"} {
		if err := ValidName(n); err != nil {
			t.Errorf("%q refused: %v", n, err)
		}
	}
	for _, n := range []string{"", "../x", "a/b", ".hidden", "x.", strings.Repeat("a", 64)} {
		if err := ValidName(n); err == nil || !IsInput(err) {
			t.Errorf("%q accepted (%v)", n, err)
		}
	}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		frac float64
		want string
	}{
		{0, "copy [                              ]   0%"},
		{0.5, "copy [===============               ]  50%"},
		{1, "copy [==============================] 100%"},
		{2, "copy [==============================] 100%"},
	} {
		if got := Bar("copy", tc.frac); got != tc.want {
			t.Errorf("Bar(%v) = %q, want %q", tc.frac, got, tc.want)
		}
	}
}

func formatOf(t *testing.T, path string) string {
	t.Helper()
	chain, _, err := disk.Resolve(path, "", disk.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("%s has a backing chain: %+v", path, chain)
	}
	return chain[0].Format
}

func TestImport(t *testing.T) {
	if _, err := exec.LookPath(disk.Tool); err != nil {
		t.Fatalf("%s not found: install qemu-utils", disk.Tool)
	}
	dir := t.TempDir()
	l := store.Layout{DataRoot: filepath.Join(dir, "data")}
	raw := filepath.Join(dir, "blank.img")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", base, "4M"},
		{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top},
	} {
		if out, err := exec.Command(disk.Tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %s", args, out)
		}
	}
	var bar bytes.Buffer
	for _, tc := range []struct{ file, name string }{{raw, "blank"}, {base, "base"}, {top, "top"}} {
		img, err := Import(l, tc.file, tc.name, &bar)
		if err != nil {
			t.Fatalf("import %s: %v", tc.file, err)
		}
		if img.Path != l.Image(tc.name) || formatOf(t, img.Path) != "qcow2" {
			t.Errorf("import %s: %+v", tc.file, img)
		}
	}
	if !strings.Contains(bar.String(), "100%") {
		t.Errorf("no progress drawn: %q", bar.String())
	}
	if _, err := Import(l, raw, "blank", nil); err == nil || !IsInput(err) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second import: %v", err)
	}
	imgs, err := List(l)
	if err != nil || len(imgs) != 3 || imgs[0].Name != "base" || imgs[1].Name != "blank" || imgs[2].Name != "top" {
		t.Fatalf("List = %+v, %v", imgs, err)
	}
	if p, ok := Lookup(l, "blank"); !ok || p != l.Image("blank") {
		t.Errorf("Lookup(blank) = %q, %v", p, ok)
	}
	for _, n := range []string{"ghost", "../data/x"} {
		if _, ok := Lookup(l, n); ok {
			t.Errorf("Lookup(%q) found something", n)
		}
	}
	if err := Remove(l, "blank"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(l, "blank"); err == nil || !IsInput(err) {
		t.Errorf("second Remove: %v", err)
	}
	ents, _ := os.ReadDir(l.Images())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("import left %s behind", e.Name())
		}
	}
}

func TestImportBadInput(t *testing.T) {
	dir := t.TempDir()
	l := store.Layout{DataRoot: filepath.Join(dir, "data")}
	for _, tc := range []struct{ file, name, want string }{
		{filepath.Join(dir, "nope.img"), "nope", "does not exist"},
		{dir, "d", "is not a regular file"},
		{"/etc/hostname", "../x", "invalid image name"},
	} {
		if _, err := Import(l, tc.file, tc.name, nil); err == nil || !IsInput(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Import(%s, %s) = %v, want %q", tc.file, tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(l.Images()); !os.IsNotExist(err) {
		t.Errorf("bad input made the cache dir: %v", err)
	}
}
