package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "run/real"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/run/real/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
	os.Symlink("../../../../../etc", filepath.Join(root, "run/up"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	for _, c := range []struct{ in, want string }{
		{"/etc/resolv.conf", "/run/real/resolv.conf"}, // absolute links restart at root
		{"/run/up/hosts", "/etc/hosts"},               // .. stops at root
		{"/new/dir", "/new/dir"},
		{"/../../x", "/x"},
	} {
		got, err := resolveIn(root, c.in)
		if err != nil || got != filepath.Join(root, c.want) {
			t.Errorf("resolveIn(%s) = %s, %v; want %s", c.in, got, err, filepath.Join(root, c.want))
		}
	}
	if _, err := resolveIn(root, "/loop/x"); err == nil {
		t.Error("a symlink loop resolved")
	}
}
