package guest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost makes a boot dir and modules dir with one kernel and no modules.
func fakeHost(t *testing.T) (boot, mods string) {
	t.Helper()
	d := t.TempDir()
	boot, mods = filepath.Join(d, "boot"), filepath.Join(d, "modules")
	os.MkdirAll(boot, 0o755)
	os.MkdirAll(filepath.Join(mods, "6.1.0-test"), 0o755)
	os.WriteFile(filepath.Join(boot, "vmlinuz-6.1.0-test"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(mods, "6.1.0-test", "modules.dep"), nil, 0o644)
	return boot, mods
}

// Without a static busybox, a static hutch becomes the micro VM's /init.
func TestBuildMicroFallsBackToOwnInit(t *testing.T) {
	boot, mods := fakeHost(t)
	old := busyboxPaths
	busyboxPaths = nil
	defer func() { busyboxPaths = old }()

	static := "/bin/busybox" // any static executable stands in for a static hutch
	if !isStatic(static) {
		t.Fatalf("%s is not a static executable (apt-get install busybox-static)", static)
	}
	m, err := BuildMicro(t.TempDir(), boot, mods, static)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile(m.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(static)
	var init []byte
	for _, e := range parseNewc(t, gz) {
		if e.name == "init" {
			init = e.data
		}
		if strings.HasPrefix(e.name, "bin/") {
			t.Errorf("the fallback initramfs has busybox applets: %s", e.name)
		}
	}
	if !bytes.Equal(init, want) {
		t.Errorf("/init is %d bytes, want the %d of %s", len(init), len(want), static)
	}

	// A dynamic hutch cannot be an init without its libraries: say what to do.
	_, err = BuildMicro(t.TempDir(), boot, mods, "/bin/ls")
	if err == nil || !strings.Contains(err.Error(), "busybox-static") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic self, no busybox: %v", err)
	}
}

func TestInitCommands(t *testing.T) {
	var out bytes.Buffer
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, []byte("content\n"), 0o644)
	for _, c := range []struct {
		line string
		want string
		goOn bool
	}{
		{"echo a  b", "a b\n", true},
		{"cat " + f, "content\n", true},
		{"ls " + filepath.Dir(f), "f\n", true},
		{"frob", "frob: unknown command (try help)\n", true},
		{"", "", true},
		{"poweroff", "", false},
		{"exit", "", false},
	} {
		out.Reset()
		if goOn := command(&out, strings.Fields(c.line)); goOn != c.goOn || out.String() != c.want {
			t.Errorf("%q: printed %q, goes on %v; want %q, %v", c.line, out.String(), goOn, c.want, c.goOn)
		}
	}
}
