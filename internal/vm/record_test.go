package vm

import (
	"os"
	"testing"

	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
)

// A record that says running is only believed while its supervisor lives.
func TestLiveStatusDistrustsDeadSupervisor(t *testing.T) {
	self, err := store.Self()
	if err != nil {
		t.Fatal(err)
	}
	rec := Record{Status: Status{State: StateRunning, Supervisor: self}}
	if v := rec.view(); v.State != StateRunning {
		t.Errorf("live supervisor: state %s", v.State)
	}
	// Same pid, another start time: a reused pid is not our supervisor.
	rec.Status.Supervisor = store.Proc{Pid: os.Getpid(), Start: self.Start + 1}
	v := rec.view()
	if v.State != StateStopped || v.Reason != "supervisor died unexpectedly" || v.Pid != 0 || v.ExitCode == nil {
		t.Errorf("dead supervisor: %+v", v)
	}
	rec.Status.VMM = self
	if v := rec.view(); v.Reason != "supervisor died; the VMM is orphaned (hutch rm -f cleans it up)" {
		t.Errorf("orphaned vmm: reason %q", v.Reason)
	}
}

func TestNameDescriptors(t *testing.T) {
	p := Plan{
		FDs: []FD{{Kind: FDSerial}, {Kind: FDQMP}, {Kind: FDFile, Path: "/img/disk.raw"}, {Kind: FDFile, Path: "/img/disk.raw", Write: true}, {Kind: FDCopy, Path: "/boot/vmlinuz"}},
		VMM: qemu.Config{FDSets: []qemu.FDSet{{ID: 1, FDs: []int{5, 6}}}},
	}
	for in, want := range map[string]string{
		"Failed to get \"write\" lock: Is another process using the image [/dev/fdset/1]?": "Failed to get \"write\" lock: Is another process using the image [/img/disk.raw]?",
		"could not load kernel '/proc/self/fd/7'":                                          "could not load kernel '/boot/vmlinuz'",
		"socket /proc/self/fd/3 and /dev/fdset/9 stay":                                     "socket /proc/self/fd/3 and /dev/fdset/9 stay",
	} {
		if got := p.NameDescriptors(in); got != want {
			t.Errorf("NameDescriptors(%q) = %q, want %q", in, got, want)
		}
	}
}
