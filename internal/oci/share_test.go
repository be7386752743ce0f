package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A guest kernel without virtiofs is named, so the shim can fall back to
// a block image and say why.
func TestSharingUnavailable(t *testing.T) {
	root := t.TempDir()
	for release, dep := range map[string]string{
		"with":    "kernel/fs/fuse/fuse.ko:\nkernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\n",
		"without": "kernel/fs/fuse/fuse.ko:\n",
	} {
		dir := filepath.Join(root, release)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
		os.WriteFile(filepath.Join(dir, "modules.builtin"), nil, 0o644)
	}
	err := sharingUnavailable(Guest{Release: "without", ModulesRoot: root})
	if err == nil || !strings.Contains(err.Error(), "the guest kernel without has no virtiofs module") {
		t.Errorf("without virtiofs: %v", err)
	}
	// virtiofsd comes with qemu-system-x86 (make deps).
	if err := sharingUnavailable(Guest{Release: "with", ModulesRoot: root}); err != nil {
		t.Errorf("with virtiofs and virtiofsd: %v", err)
	}
}
