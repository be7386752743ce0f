//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A container whose setup failed, or that is removed, leaves nothing
// mounted: its root goes with everything mounted inside it.
func TestReleaseUnmountsTheRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting a container's root needs root: run the tests as root")
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount the root: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	os.Mkdir(filepath.Join(root, "proc"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(root, "proc"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount inside the root: %v", err)
	}
	if err := release(&container{root: root}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], root) {
			t.Errorf("still mounted after release: %s", line)
		}
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the root directory stays: %v", err)
	}
	// A root never mounted (the stage failed first) is no error.
	if err := release(&container{root: filepath.Join(t.TempDir(), "never")}); err != nil {
		t.Errorf("release of a root never mounted: %v", err)
	}
}
