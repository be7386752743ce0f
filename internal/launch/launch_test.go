//go:build linux && !386 && !arm

package launch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// parentEnv makes the test binary act as a supervisor that starts the Spec
// in it and prints the target's pid, so a test can kill that supervisor.
const parentEnv = "HUTCH_LAUNCH_TEST_PARENT"

// TestMain lets the test binary stand in for hutch: `self _exec SPEC` is
// the stage, as cmd/hutch wires it.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == StageCommand {
		err := Stage(os.Args[2])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if spec := os.Getenv(parentEnv); spec != "" {
		os.Exit(actAsParent(spec))
	}
	os.Exit(m.Run())
}

func actAsParent(specJSON string) int {
	var s Spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	self, _ := os.Executable()
	cmd, err := Command(self, s)
	if err == nil {
		cmd.Stderr = os.Stderr
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(cmd.Process.Pid)
	cmd.Wait()
	return 0
}

// The identity hutch leases first by default: no passwd entry, no groups.
const leased = 1879048193

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("launch tests change credentials and must run as root (euid %d)", os.Geteuid())
	}
}

func self(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sleepSpec() Spec {
	return Spec{
		UID: leased, GID: leased,
		Argv: []string{"/bin/sleep", "30"},
		Env:  []string{"HOME=/nonexistent", "ONLY=this"},
		Rlimits: []Rlimit{
			{unix.RLIMIT_NOFILE, 64, 128},
			{unix.RLIMIT_CORE, 0, 0},
			{unix.RLIMIT_NPROC, 300, 300},
		},
	}
}

// waitSleeping waits until pid is /bin/sleep asleep. The kernel renames a
// process before it closes its close-on-exec descriptors, so a new comm
// alone does not mean the exec is over; sleeping in nanosleep does.
func waitSleeping(t *testing.T, pid int, stderr fmt.Stringer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			t.Fatalf("pid %d gone before sleeping: %v; stderr %q", pid, err, stderr)
		}
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		if string(comm) == "sleep\n" && strings.Contains(string(wchan), "nanosleep") {
			return
		}
	}
	t.Fatalf("pid %d never became a sleeping /bin/sleep; stderr %q", pid, stderr)
}

// procStatus returns the fields of /proc/pid/status, values trimmed.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(line, ":")
		m[k] = strings.Join(strings.Fields(v), " ")
	}
	return m
}

// procLimits returns soft and hard values from /proc/pid/limits by name.
func procLimits(t *testing.T, pid int) map[string][2]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][2]string{}
	for line := range strings.Lines(string(b)) {
		if len(line) < 46 {
			continue
		}
		// Fixed columns: name 26, soft 21, hard 21, units.
		f := strings.Fields(line[26:])
		m[strings.TrimSpace(line[:26])] = [2]string{f[0], f[1]}
	}
	return m
}

func TestTargetHasNothingItDoesNotNeed(t *testing.T) {
	needRoot(t)
	for _, groups := range [][]uint32{nil, {leased + 1, 100}} {
		t.Run(fmt.Sprintf("groups=%v", groups), func(t *testing.T) {
			procs := filepath.Join(t.TempDir(), "cgroup.procs")
			if err := os.WriteFile(procs, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			extra, err := os.Open("/dev/null")
			if err != nil {
				t.Fatal(err)
			}
			defer extra.Close()
			// As if this process had inherited it: no close-on-exec.
			leak, err := os.Open("/dev/zero")
			if err != nil {
				t.Fatal(err)
			}
			defer leak.Close()
			if _, err := unix.FcntlInt(leak.Fd(), unix.F_SETFD, 0); err != nil {
				t.Fatal(err)
			}

			s := sleepSpec()
			s.Groups = groups
			s.CgroupProcs = []string{procs}
			s.NumExtraFiles = 1
			cmd, err := Command(self(t), s)
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.ExtraFiles = []*os.File{extra}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			pid := cmd.Process.Pid
			waitSleeping(t, pid, &stderr)

			st := procStatus(t, pid)
			id := fmt.Sprintf("%d %d %d %d", leased, leased, leased, leased)
			wantGroups := slices.Sorted(slices.Values(groups))
			want := map[string]string{
				"Uid": id, "Gid": id,
				"Groups":     strings.Trim(fmt.Sprint(wantGroups), "[]"),
				"CapInh":     "0000000000000000",
				"CapPrm":     "0000000000000000",
				"CapEff":     "0000000000000000",
				"CapBnd":     "0000000000000000",
				"CapAmb":     "0000000000000000",
				"NoNewPrivs": "1",
			}
			for k, v := range want {
				if st[k] != v {
					t.Errorf("%s: %q, want %q", k, st[k], v)
				}
			}

			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Split(strings.TrimSuffix(string(env), "\x00"), "\x00"); !slices.Equal(got, s.Env) {
				t.Errorf("environment %q, want exactly %q", got, s.Env)
			}

			lim := procLimits(t, pid)
			for name, v := range map[string][2]string{
				"Max open files":     {"64", "128"},
				"Max core file size": {"0", "0"},
				"Max processes":      {"300", "300"},
			} {
				if lim[name] != v {
					t.Errorf("%s: %v, want %v", name, lim[name], v)
				}
			}

			fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, fd := range fds {
				names = append(names, fd.Name())
			}
			if !slices.Equal(names, []string{"0", "1", "2", "3"}) {
				t.Errorf("fds %v, want exactly 0 1 2 3 (fd %d leaked?)", names, leak.Fd())
			}
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid)); l != "/dev/null" {
				t.Errorf("fd 3 is %q, want the ExtraFiles /dev/null", l)
			}

			if b, _ := os.ReadFile(procs); string(b) != "0" {
				t.Errorf("cgroup.procs holds %q, want the stage's join %q", b, "0")
			}
		})
	}
}

func TestTargetDiesWithItsParent(t *testing.T) {
	needRoot(t)
	b, _ := json.Marshal(sleepSpec())
	parent := exec.Command(self(t))
	parent.Env = append(os.Environ(), parentEnv+"="+string(b))
	// A file, not a buffer: the target inherits stderr, and Wait would
	// otherwise wait for the target to close it.
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	parent.Stderr = errFile
	stderr := fileText(errFile.Name())
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Wait()
	defer parent.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("parent printed %q (%v); stderr %q", line, err, stderr)
	}
	waitSleeping(t, pid, stderr)

	parent.Process.Kill()
	parent.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// Dead: gone, or a zombie until its new parent reaps it.
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("target %d outlived its parent by 5s", pid)
		}
	}
}

type fileText string

func (f fileText) String() string { b, _ := os.ReadFile(string(f)); return string(b) }

func TestRootIsRefused(t *testing.T) {
	for _, s := range []Spec{
		{UID: 0, GID: leased, Argv: []string{"/bin/true"}},
		{UID: leased, GID: 0, Argv: []string{"/bin/true"}},
	} {
		if _, err := Command("/proc/self/exe", s); err == nil {
			t.Errorf("Command accepted uid %d gid %d", s.UID, s.GID)
		}
		b, _ := json.Marshal(s)
		// Refused before any step with an effect, so safe to call in-process.
		if err := Stage(string(b)); err == nil || !strings.Contains(err.Error(), "root") {
			t.Errorf("Stage with uid %d gid %d: %v, want a refusal", s.UID, s.GID, err)
		}
	}
	if _, err := Command("/proc/self/exe", Spec{UID: leased, GID: leased, Argv: []string{"sleep"}}); err == nil {
		t.Error("Command accepted a relative Argv[0]")
	}
}

// A stage that cannot finish exits 1 with one line on stderr, and never
// runs the target.
func TestStageFailureExitsOne(t *testing.T) {
	needRoot(t)
	missing := sleepSpec()
	missing.Argv = []string{"/nonexistent/vmm"}
	noCgroup := sleepSpec()
	noCgroup.CgroupProcs = []string{filepath.Join(t.TempDir(), "cgroup.procs")}
	orphan := sleepSpec()
	orphan.ParentPid = 1 // as if the supervisor died before the stage re-armed pdeathsig

	for name, tc := range map[string]struct {
		s      Spec
		direct bool // bypass Command, which would fix ParentPid
		want   string
	}{
		"missing target":    {missing, false, "exec: no such file"},
		"missing cgroup":    {noCgroup, false, "join cgroup"},
		"parent died early": {orphan, true, "parent 1 is gone"},
	} {
		t.Run(name, func(t *testing.T) {
			var cmd *exec.Cmd
			if tc.direct {
				b, _ := json.Marshal(tc.s)
				cmd = exec.Command(self(t), StageCommand, string(b))
			} else {
				var err error
				if cmd, err = Command(self(t), tc.s); err != nil {
					t.Fatal(err)
				}
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("stage ended with %v, want exit status 1; stderr %q", err, &stderr)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q, want one line containing %q", msg, tc.want)
			}
		})
	}
}
