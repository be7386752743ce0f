package guest

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitramfsWrite(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found (apt-get install busybox-static): %v", err)
	}
	dir := fakeModDir(t)
	writeMod := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeMod("kernel/drivers/virtio/virtio_ring.ko", []byte("ring"))
	writeMod("kernel/drivers/virtio/virtio.ko", []byte("virtio"))
	writeMod("kernel/drivers/char/hw_random/virtio-rng.ko", []byte("rng"))

	c := Initramfs{
		Busybox: bb,
		ModDir:  dir,
		Modules: []string{"virtio-rng", "loop"},
		Init:    []byte("#!/bin/sh\nexec sh\n"),
		Files: map[string][]byte{
			"/www/index.html":  []byte("page"),
			"etc/udhcpc.sh":    []byte("#!/bin/sh\n"),
			"bin/hello":        []byte("#!/bin/sh\necho hello\n"),
			"etc/nested/x.txt": []byte("x"),
		},
	}
	var buf bytes.Buffer
	if err := c.Write(&buf); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := c.Write(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two builds of the same initramfs differ")
	}

	byName := map[string]cpioEntry{}
	for _, e := range parseNewc(t, buf.Bytes()) {
		byName[e.name] = e
	}
	for name, want := range map[string]struct {
		mode uint32
		data string
	}{
		"init":                       {0o100755, string(c.Init)},
		"bin/sh":                     {0o120777, "busybox"},
		"bin/insmod":                 {0o120777, "busybox"},
		"sbin":                       {0o120777, "bin"},
		"usr/bin":                    {0o120777, "../bin"},
		"tmp":                        {0o041777, ""},
		"proc":                       {0o040555, ""},
		"dev/console":                {0o020600, ""},
		"lib/modules/virtio_ring.ko": {0o100644, "ring"},
		"lib/modules/virtio.ko":      {0o100644, "virtio"},
		"lib/modules/virtio_rng.ko":  {0o100644, "rng"},
		"etc/modules.order":          {0o100644, "/lib/modules/virtio_ring.ko\n/lib/modules/virtio.ko\n/lib/modules/virtio_rng.ko\n"},
		"www/index.html":             {0o100644, "page"},
		"etc/udhcpc.sh":              {0o100755, "#!/bin/sh\n"},
		"bin/hello":                  {0o100755, "#!/bin/sh\necho hello\n"},
		"etc/nested/x.txt":           {0o100644, "x"},
		"etc/nested":                 {0o040755, ""},
		"lib/modules":                {0o040755, ""},
		"dev":                        {0o040755, ""},
		"sys":                        {0o040555, ""},
		"run":                        {0o040755, ""},
		"root":                       {0o040700, ""},
		"usr/sbin":                   {0o120777, "../bin"},
		"bin":                        {0o040755, ""},
		"etc":                        {0o040755, ""},
		"www":                        {0o040755, ""},
		"lib":                        {0o040755, ""},
		"usr":                        {0o040755, ""},
	} {
		e, ok := byName[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if e.mode != want.mode || string(e.data) != want.data {
			t.Errorf("%s: mode %o data %q, want mode %o data %q", name, e.mode, e.data, want.mode, want.data)
		}
	}
	bbData, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if e := byName["bin/busybox"]; e.mode != 0o100755 || !bytes.Equal(e.data, bbData) {
		t.Errorf("bin/busybox: mode %o, %d bytes; want 0755 and the host binary", e.mode, len(e.data))
	}
}

func TestInitramfsErrors(t *testing.T) {
	dir := fakeModDir(t)
	for name, c := range map[string]Initramfs{
		"no init":         {},
		"no module dir":   {Init: []byte("x"), Modules: []string{"virtio"}},
		"unknown module":  {Init: []byte("x"), ModDir: dir, Modules: []string{"nope"}},
		"missing .ko":     {Init: []byte("x"), ModDir: dir, Modules: []string{"virtio_ring"}},
		"xz module":       {Init: []byte("x"), ModDir: dir, Modules: []string{"zipped"}},
		"file over init":  {Init: []byte("x"), Files: map[string][]byte{"/init": nil}},
		"missing busybox": {Init: []byte("x"), Busybox: filepath.Join(dir, "busybox")},
	} {
		if err := c.Write(&bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "initramfs: ") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
}

func TestReadModuleGzip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.ko.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("module"))
	zw.Close()
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := readModule(p)
	if err != nil || string(data) != "module" {
		t.Fatalf("got %q, %v", data, err)
	}
}
