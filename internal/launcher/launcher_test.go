package launcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/vm"
)

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	os.WriteFile(disk, []byte("data"), 0o600)
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	p := &vm.Plan{FDs: []vm.FD{{Kind: vm.FDSerial}, {Kind: vm.FDFile, Path: disk}, {Kind: vm.FDFile, Path: disk, Write: true}, {Kind: vm.FDCopy, Path: disk}}}
	files, err := Files(p, Channels{Serial: w})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	modes := []int{unix.O_WRONLY, unix.O_RDONLY, unix.O_RDWR}
	for i, want := range modes {
		fl, err := unix.FcntlInt(files[i].Fd(), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_ACCMODE != want {
			t.Errorf("descriptor %d: flags %#x, %v; want access mode %#x", i, fl, err, want)
		}
	}
	// The sealed copy holds the content and cannot be written.
	if _, err := files[3].Write([]byte("x")); err == nil {
		t.Error("the sealed copy took a write")
	}
	// A channel the plan names but the caller did not make is an error,
	// and nothing opened stays open.
	p.FDs = append(p.FDs, vm.FD{Kind: vm.FDShare})
	if _, err := Files(p, Channels{Serial: w}); err == nil || !strings.Contains(err.Error(), "share") {
		t.Errorf("a missing share channel: %v", err)
	}
	if _, err := Files(&vm.Plan{FDs: []vm.FD{{Kind: "bogus"}}}, Channels{}); err == nil {
		t.Error("an unknown kind was opened")
	}
}

func TestHelperStop(t *testing.T) {
	// One that ignores SIGTERM is killed; a nil helper is a no-op.
	cmd := exec.Command("sh", "-c", "trap '' TERM; sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := Watch(cmd)
	start := time.Now()
	h.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
	select {
	case <-h.Done():
	default:
		t.Error("the helper is not reaped after Stop")
	}
	var none *Helper
	none.Stop()
	if none.Done() != nil {
		t.Error("a nil helper's Done is not nil")
	}
}
