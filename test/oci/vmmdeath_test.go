package oci

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/hostproc"
)

// assertVMMDeathEnds kills the VMM of the container whose pid is pid and
// checks what an engine must see: the container ends within 5 s with a
// non-zero status, and none of its host processes is left. ended asks the
// engine whether the container has ended, and with what status.
func assertVMMDeathEnds(t *testing.T, pid int, ended func() (bool, int, string)) {
	t.Helper()
	vmm := childQEMU(pid)
	if vmm == 0 {
		t.Fatalf("no VMM under the container's pid %d", pid)
	}
	procs := append([]int{pid}, hostproc.Descendants(pid)...)
	syscall.Kill(vmm, syscall.SIGKILL)
	start := time.Now()
	var status int
	var seen string
	for {
		done, code, what := ended()
		seen = what
		if done {
			status = code
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("5 s after its VMM was killed the engine still shows the container as %s", seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status == 0 {
		t.Errorf("the container ended with status 0 when its VMM was killed (engine: %s)", seen)
	}
	for _, p := range procs {
		if !waitGone(p) {
			t.Errorf("process %d of the container outlived its VMM: %v", p, procStatus(p))
		}
	}
}

// inspectEnded reads an engine's "{{.State.Status}} {{.State.ExitCode}}".
func inspectEnded(out string) (bool, int, string) {
	var state string
	var code int
	fmt.Sscan(strings.TrimSpace(out), &state, &code)
	return state == "exited" || state == "stopped", code, strings.TrimSpace(out)
}

func TestPodmanKilledVMM(t *testing.T) {
	name := "hutch-oci-vmm9"
	runCmd(t, podman.podman("rm", "-f", name))
	if r := runCmd(t, podman.podman("run", "-d", "--name", name, image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("podman run -d: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, podman.podman("rm", "-f", name))
	pid := 0
	fmt.Sscan(runCmd(t, podman.podman("inspect", "--format", "{{.State.Pid}}", name)).stdout, &pid)
	assertVMMDeathEnds(t, pid, func() (bool, int, string) {
		return inspectEnded(runCmd(t, podman.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)).stdout)
	})
}
