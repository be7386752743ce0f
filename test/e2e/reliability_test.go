package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/test/testproc"
)

// cheapRun is `run -d` of the test guest at its cheapest: 64M, and passt
// (named, whatever the default) with one forward when port is set, so that
// passt and a host port take part in the faults; no network otherwise.
func cheapRun(name string, port int, extra ...string) []string {
	args := []string{"run", "-d", "--name", name, "--memory", "64M", "--kernel", guest.Kernel, "--initrd", guest.Initrd, "--append", "console=ttyS0"}
	if port > 0 {
		args = append(args, "--network", "passt", "-p", fmt.Sprintf("127.0.0.1:%d:80", port))
	} else {
		args = append(args, "--network", "none")
	}
	return append(args, extra...)
}

// afterFault is what every fault scenario ends with: the next ps is
// truthful and sweeps what dead commands left, rm -f succeeds, and nothing
// of the VM remains: process, socket, runtime dir, record, overlay, port.
func afterFault(t *testing.T, u *tUser, name string, port int) {
	t.Helper()
	// A qemu-img of a killed run may still be finishing its overlay in the
	// staging dir; the staging dir is only swept once nothing writes there.
	waitFor(10*time.Second, func() bool {
		for _, p := range userProcs(u) {
			if strings.HasPrefix(p.comm, "qemu-img") {
				return false
			}
		}
		return true
	})
	listed := checkTruthful(t, u, name)
	if left := stagingLeftovers(u); len(left) != 0 {
		t.Errorf("after the next ps, staging or trash of dead commands remains: %v", left)
	}
	rmForce(t, u, name, listed)
	checkGoneClean(t, u, "after rm -f "+name)
	if port > 0 && !waitFor(5*time.Second, func() bool { return tcpPortFree(port) }) {
		t.Errorf("host port %d is still held after rm -f:\n%s", port, procList(userProcs(u)))
	}
}

// jitter spreads the kill points of repeated runs a little, so that runs
// of the suite cover more of each command.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.IntN(10))*time.Millisecond
}

// kill -9 of `run -d` at many points: before anything exists, while the
// staging dir is filled, just after the record is in place, once the
// supervisor has made the runtime dir, and at delays spread over the whole
// command (which takes about 200 ms here). The VM then exists and ps tells
// the truth about it, or it does not exist at all.
func TestFaultRunCLIKilled(t *testing.T) {
	t.Parallel()
	for _, ms := range []int{0, 20, 40, 70, 100, 130, 160, 200, 250, 300} {
		d := jitter(time.Duration(ms) * time.Millisecond)
		t.Run(fmt.Sprintf("after-%s", d), func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest1")
			port := freePort(t)
			c, done := startHutch(t, u, cheapRun("v", port)...)
			time.Sleep(d)
			c.Process.Kill()
			r := <-done
			t.Logf("run -d killed after %s: %v", d, r)
			afterFault(t, u, "v", port)
		})
	}
	vms := func(u *tUser) string { return filepath.Join(u.dataDir, "hutch", "vms") }
	runs := func(u *tUser) string { return filepath.Join(u.runDir, "hutch", "vms") }
	points := []struct {
		name  string
		image bool // boot an IMAGE: its overlay is made in the staging dir
		dir   func(u *tUser) string
		entry func(name string) bool
		// exact, when set, tells after the kill whether it was at the point;
		// if not, the run is let finish and tried again.
		exact func(u *tUser) bool
	}{
		{"in-staging", true, vms, func(n string) bool { return strings.HasPrefix(n, ".new-") }, nil},
		// The record is in place and no supervisor was started.
		{"on-record", false, vms, func(n string) bool { return n == "v" }, func(u *tUser) bool {
			_, started := findVMProc(u, 2*time.Second, isSupervisor)
			return !started
		}},
		{"on-runtime-dir", false, runs, func(n string) bool { return n == "v" }, nil},
	}
	for _, pt := range points {
		t.Run(pt.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest1")
			u.ok("ps") // the state dirs exist before the command starts
			port := freePort(t)
			args := cheapRun("v", port)
			if pt.image {
				args = []string{"run", "-d", "--name", "v", "--memory", "64M", "--network", "passt", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), guest.DiskImage}
			}
			for attempt := 1; ; attempt++ {
				w := watchDir(t, pt.dir(u))
				c, done := startHutch(t, u, args...)
				seen := w.wait(pt.entry, 30*time.Second)
				w.close()
				c.Process.Kill()
				r := <-done
				at := seen && r.code == 128+int(syscall.SIGKILL) && (pt.exact == nil || pt.exact(u))
				if at || attempt == 10 {
					t.Logf("attempt %d: run -d killed at the point: %v (%v)", attempt, at, r)
					break
				}
				// Too late: the VM goes on starting. Once it runs, remove it
				// and try again.
				waitFor(30*time.Second, func() bool { v, ok := psAll(t, u)["v"]; return !ok || v.State != "created" })
				rmForce(t, u, "v", true)
				checkGoneClean(t, u, "after a run killed too late")
			}
			afterFault(t, u, "v", port)
		})
	}
}

// kill -9 of the supervisor, QEMU or passt while `run -d` is still
// waiting for the VM to come up: run fails with one line or succeeds, and
// either way the next ps is truthful and rm -f cleans.
func TestFaultRunProcessKilled(t *testing.T) {
	t.Parallel()
	for _, victim := range []struct {
		name  string
		match func(hostProc) bool
	}{{"supervisor", isSupervisor}, {"qemu", isQEMU}, {"passt", isPasst}} {
		t.Run(victim.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest2")
			port := freePort(t)
			_, done := startHutch(t, u, cheapRun("v", port)...)
			p, found := findVMProc(u, 30*time.Second, victim.match)
			if found {
				sigkill(t, p.pid)
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(2 * bootTimeout):
				t.Fatalf("run -d did not return after its %s was killed", victim.name)
			}
			t.Logf("%s killed during run -d (found %v): %v", victim.name, found, r)
			if r.code != 0 && (r.code != 1 || !isOneHutchLine(r.err)) {
				t.Errorf("run -d whose %s was killed: %v; want success or exit 1 with one line", victim.name, r)
			}
			afterFault(t, u, "v", port)
		})
	}
}

// kill -9 of the supervisor, QEMU, passt, or all three, under a running VM.
func TestFaultRunningProcessKilled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		victims func(v view) []int
		state   string
		reason  string
	}{
		{"supervisor", func(v view) []int { return []int{v.SupervisorPid} }, "stopped", "supervisor died"},
		{"qemu", func(v view) []int { return []int{v.Pid} }, "stopped", "signal SIGKILL"},
		{"passt", func(v view) []int { return []int{v.PasstPid} }, "running", ""},
		{"all", func(v view) []int { return []int{v.PasstPid, v.Pid, v.SupervisorPid} }, "stopped", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest1")
			port := freePort(t)
			u.ok(cheapRun("v", port)...)
			v := u.inspect("v")
			if v.PasstPid == 0 {
				t.Fatalf("inspect shows no passt: %+v", v)
			}
			for _, pid := range tc.victims(v) {
				sigkill(t, pid)
			}
			// What was not killed follows what was: QEMU and passt die with
			// their supervisor, the supervisor ends with QEMU.
			if tc.state == "stopped" {
				for what, pid := range map[string]int{"qemu": v.Pid, "passt": v.PasstPid, "supervisor": v.SupervisorPid} {
					if !waitFor(10*time.Second, func() bool { return procStatus(pid) == nil }) {
						t.Errorf("%s (pid %d) outlived the kill -9 of the %s", what, pid, tc.name)
					}
				}
			} else if !waitFor(10*time.Second, func() bool { return strings.Contains(u.inspect("v").NetworkError, "passt") }) {
				t.Errorf("inspect does not say passt is gone: %+v", u.inspect("v"))
			}
			got := psAll(t, u)["v"]
			if got.State != tc.state || !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("after kill -9 of %s: state %q reason %q; want %q with %q", tc.name, got.State, got.Reason, tc.state, tc.reason)
			}
			if tc.state == "stopped" && !tcpPortFree(port) {
				t.Errorf("host port %d is still held by a stopped vm", port)
			}
			afterFault(t, u, "v", port)
		})
	}
}

// kill -9 of `stop -t 5` at points of its wait (the test guest ignores
// ACPI, so stop waits the full 5 s, then sends SIGTERM), and kill -9 of
// QEMU, the supervisor or passt while stop waits.
func TestFaultStopInterrupted(t *testing.T) {
	t.Parallel()
	for _, ms := range []int{0, 30, 300, 2500, 5100} {
		d := jitter(time.Duration(ms) * time.Millisecond)
		t.Run(fmt.Sprintf("cli-after-%s", d), func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest2")
			port := freePort(t)
			u.ok(cheapRun("v", port)...)
			c, done := startHutch(t, u, "stop", "-t", "5", "v")
			time.Sleep(d)
			c.Process.Kill()
			t.Logf("stop killed after %s: %v", d, <-done)
			if checkTruthful(t, u, "v") {
				// An interrupted stop does not keep the next one from working.
				if r := tryHutch(u, "stop", "-t", "0", "v"); r.code != 0 {
					t.Errorf("stop after an interrupted stop: %v", r)
				}
				if got := psAll(t, u)["v"]; got.State != "stopped" {
					t.Errorf("after stop -t 0: %+v", got)
				}
			}
			afterFault(t, u, "v", port)
		})
	}
	for _, victim := range []string{"qemu", "supervisor", "passt"} {
		t.Run(victim+"-mid-stop", func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest2")
			port := freePort(t)
			u.ok(cheapRun("v", port)...)
			v := u.inspect("v")
			start := time.Now()
			_, done := startHutch(t, u, "stop", "-t", "5", "v")
			time.Sleep(jitter(500 * time.Millisecond))
			pid := map[string]int{"qemu": v.Pid, "supervisor": v.SupervisorPid, "passt": v.PasstPid}[victim]
			sigkill(t, pid)
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("stop did not return after the %s was killed", victim)
			}
			// With passt killed, stop still has its QEMU to end after -t.
			limit := 4 * time.Second
			if victim == "passt" {
				limit = 15 * time.Second
			}
			if r.code != 0 || time.Since(start) > limit {
				t.Errorf("stop with its vm's %s killed: %v after %s; want exit 0 within %s", victim, r, time.Since(start), limit)
			}
			got := psAll(t, u)["v"]
			if got.State != "stopped" {
				t.Errorf("after stop: %+v", got)
			}
			if victim == "qemu" && !strings.Contains(got.Reason, "hutch stop") {
				t.Errorf("a vm whose qemu died while hutch stop waited: reason %q, want it to name the stop", got.Reason)
			}
			if checkTruthful(t, u, "v") {
				if r := tryHutch(u, "rm", "v"); r.code != 0 {
					t.Errorf("rm of the stopped vm: %v", r)
				}
			}
			afterFault(t, u, "v", port)
		})
	}
}

// kill -9 of `rm -f` of a running VM at delays over the whole command, the
// moment QEMU is gone, and the moment the data dir became trash.
func TestFaultRmInterrupted(t *testing.T) {
	t.Parallel()
	type point struct {
		name  string
		delay time.Duration
		cond  func(u *tUser, v view) bool
	}
	var points []point
	for _, ms := range []int{0, 10, 25, 50, 100, 200} {
		d := jitter(time.Duration(ms) * time.Millisecond)
		points = append(points, point{name: fmt.Sprintf("after-%s", d), delay: d})
	}
	points = append(points,
		point{name: "on-qemu-gone", cond: func(u *tUser, v view) bool { return procStatus(v.Pid) == nil }},
		point{name: "on-trash", cond: func(u *tUser, v view) bool {
			for _, n := range dirNames(filepath.Join(u.dataDir, "hutch", "vms")) {
				if strings.HasPrefix(n, ".rm-") {
					return true
				}
			}
			return false
		}},
	)
	for _, pt := range points {
		t.Run(pt.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest1")
			port := freePort(t)
			u.ok(cheapRun("v", port)...)
			v := u.inspect("v")
			if pt.name == "on-trash" {
				padDataDir(t, u, "v")
			}
			c, done := startHutch(t, u, "rm", "-f", "v")
			var r result
			if pt.cond != nil {
				var hit bool
				r, hit = killWhen(c, done, 30*time.Second, func() bool { return pt.cond(u, v) })
				if !hit {
					t.Logf("rm -f finished before the point was seen")
				}
			} else {
				time.Sleep(pt.delay)
				c.Process.Kill()
				r = <-done
			}
			t.Logf("rm -f killed: %v", r)
			afterFault(t, u, "v", port)
		})
	}
}

// padDataDir puts thousands of files in a VM's data dir, as a VM that
// wrote much there would have: deleting its trash then takes long enough
// for a kill to land in the middle of it.
func padDataDir(t *testing.T, u *tUser, name string) {
	t.Helper()
	junk := filepath.Join(vmDataDir(u, name), "junk")
	if err := os.Mkdir(junk, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(junk, u.uid, u.gid)
	for i := range 5000 {
		f := filepath.Join(junk, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(f, u.uid, u.gid)
	}
}

// One command of the concurrency test, with every outcome it may have
// while other commands work on the same names; anything else is a failure.
type concOp struct {
	name string
	args func(vm string) []string
	ok   func(vm string, r result) bool
}

var concOps = []concOp{
	{"run", func(vm string) []string { return cheapRun(vm, 0) }, func(vm string, r result) bool {
		switch r.code {
		case 0:
			return r.out == vm+"\n"
		case 2:
			return strings.Contains(r.err, fmt.Sprintf("a vm named %q already exists", vm))
		case 1:
			// The VM was removed or killed while it started.
			return strings.Contains(r.err, fmt.Sprintf("hutch: start vm %q: ", vm))
		}
		return false
	}},
	{"ps", func(string) []string { return []string{"ps", "-a", "--format", "json"} }, func(vm string, r result) bool {
		var vs []view
		if r.code != 0 || json.Unmarshal([]byte(r.out), &vs) != nil {
			return false
		}
		seen := map[string]bool{}
		for _, v := range vs {
			if seen[v.Name] || !strings.HasPrefix(v.Name, "c") {
				return false
			}
			seen[v.Name] = true
		}
		return true
	}},
	{"inspect", func(vm string) []string { return []string{"inspect", vm} }, func(vm string, r result) bool {
		var v view
		return (r.code == 0 && json.Unmarshal([]byte(r.out), &v) == nil && v.Name == vm) || isNoSuchVM(vm, r)
	}},
	{"stop", func(vm string) []string { return []string{"stop", "-t", "0", vm} }, func(vm string, r result) bool {
		return (r.code == 0 && r.out == vm+"\n") || isNoSuchVM(vm, r)
	}},
	{"kill", func(vm string) []string { return []string{"kill", vm} }, func(vm string, r result) bool {
		return (r.code == 0 && r.out == vm+"\n") || isNoSuchVM(vm, r) ||
			(r.code == 1 && strings.Contains(r.err, fmt.Sprintf("vm %q is not running", vm)))
	}},
	{"rm", func(vm string) []string { return []string{"rm", "-f", vm} }, func(vm string, r result) bool {
		return (r.code == 0 && r.out == vm+"\n") || isNoSuchVM(vm, r)
	}},
}

func isNoSuchVM(vm string, r result) bool {
	return r.code == 1 && strings.Contains(r.err, "no such vm: "+vm)
}

// Two users, 20 commands at once each (run, ps, inspect, stop, kill, rm)
// on a small pool of names, over several rounds. Between rounds, with no
// command at work: every record parses, no name is listed twice, what ps
// says matches the processes (no VM has two supervisors or two QEMUs, no
// QEMU runs that no record owns), and no staging or trash is left. At the
// end, rm -f of every name leaves nothing.
func TestConcurrencyTwoUsers(t *testing.T) {
	t.Parallel()
	users := []*tUser{newUser(t, "hutchtest1"), newUser(t, "hutchtest2")}
	pool := []string{"c0", "c1", "c2", "c3"}
	// run is the most frequent, so that the others mostly meet a VM.
	weights := []int{0, 0, 0, 1, 1, 2, 2, 3, 4, 5}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const rounds, workers, opsEach = 4, 20, 3
	counts := map[string]int{}
	var mu sync.Mutex
	for round := range rounds {
		var wg sync.WaitGroup
		var failures []string
		for ui, u := range users {
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(round<<16|ui<<8|w)))
					for range opsEach {
						vm := pool[rng.IntN(len(pool))]
						op := concOps[weights[rng.IntN(len(weights))]]
						r := tryHutch(u, op.args(vm)...)
						mu.Lock()
						counts[fmt.Sprintf("%s exit %d", op.name, r.code)]++
						if !op.ok(vm, r) {
							failures = append(failures, fmt.Sprintf("%s: hutch %s: %v", u.name, strings.Join(op.args(vm), " "), r))
						}
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		for _, f := range failures {
			t.Errorf("round %d: %s", round, f)
		}
		for _, u := range users {
			var problems []string
			waitFor(15*time.Second, func() bool { problems = poolProblems(t, u, pool); return len(problems) == 0 })
			for _, p := range problems {
				t.Errorf("round %d, %s: %s", round, u.name, p)
			}
		}
	}
	t.Logf("outcomes: %v", counts)
	for _, u := range users {
		for _, vm := range pool {
			if r := tryHutch(u, "rm", "-f", vm); r.code != 0 && !isNoSuchVM(vm, r) {
				t.Errorf("%s: rm -f %s: %v", u.name, vm, r)
			}
		}
		checkGoneClean(t, u, u.name+" after rm -f of every vm")
	}
}

// poolProblems compares ps, inspect, the disk and the process table for
// every name of the pool while no command is at work.
func poolProblems(t *testing.T, u *tUser, pool []string) []string {
	var problems []string
	listed := psAll(t, u)
	for n := range listed {
		if !slices.Contains(pool, n) {
			problems = append(problems, fmt.Sprintf("ps -a lists %q, a name no command used", n))
		}
	}
	for _, vm := range pool {
		_, p := judgeVM(t, u, vm)
		problems = append(problems, p...)
	}
	if left := stagingLeftovers(u); len(left) != 0 {
		problems = append(problems, fmt.Sprintf("staging or trash remains with no command at work: %v", left))
	}
	// Every supervisor and QEMU belongs to a VM listed running, and to
	// that VM alone.
	supervisors, qemus := map[string][]int{}, map[string][]int{}
	for _, p := range userProcs(u) {
		switch {
		case isSupervisor(p):
			supervisors[supervisorOf(p)] = append(supervisors[supervisorOf(p)], p.pid)
		case isQEMU(p):
			qemus[vmOfProc(u, p)] = append(qemus[vmOfProc(u, p)], p.pid)
		}
	}
	says := func(vm string) string {
		v, ok := listed[vm]
		if !ok {
			return "which ps -a does not list"
		}
		return fmt.Sprintf("which ps -a lists %s with supervisor %d and qemu %d", v.State, v.SupervisorPid, v.Pid)
	}
	for vm, pids := range supervisors {
		if v := listed[vm]; len(pids) != 1 || v.State != "running" || v.SupervisorPid != pids[0] {
			problems = append(problems, fmt.Sprintf("supervisors %v run for vm %s, %s", pids, vm, says(vm)))
		}
	}
	for vm, pids := range qemus {
		if v := listed[vm]; len(pids) != 1 || v.State != "running" || v.Pid != pids[0] {
			problems = append(problems, fmt.Sprintf("qemus %v run for vm %s, %s", pids, vm, says(vm)))
		}
	}
	return problems
}

// Several runs at once asking for the same host port: exactly one gets it
// and the others are refused, naming the port; never do two VMs hold it.
// First runs of one user (they take the port under one lock), then runs of
// two users (who share no lock: the port itself decides).
func TestConcurrencySamePort(t *testing.T) {
	t.Parallel()
	u1, u2 := newUser(t, "hutchtest1"), newUser(t, "hutchtest2")
	for _, tc := range []struct {
		name  string
		users []*tUser
	}{
		{"one-user", []*tUser{u1, u1, u1, u1}},
		{"two-users", []*tUser{u1, u2, u1, u2}},
	} {
		for round := range 3 {
			port := freePort(t)
			results := make([]result, len(tc.users))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, u := range tc.users {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i] = tryHutch(u, cheapRun(fmt.Sprintf("p%d", i), port)...)
				}()
			}
			close(start)
			wg.Wait()
			var winners []string
			want := fmt.Sprintf("host port 127.0.0.1:%d/tcp is already in use", port)
			for i, r := range results {
				vm := fmt.Sprintf("p%d", i)
				if r.code == 0 {
					winners = append(winners, tc.users[i].name+"/"+vm)
					continue
				}
				if r.code != 2 || !strings.Contains(r.err, want) || !isOneHutchLine(r.err) {
					t.Errorf("%s round %d: run %s as %s on a contested port: %v; want exit 2 and %q", tc.name, round, vm, tc.users[i].name, r, want)
				}
			}
			if len(winners) != 1 {
				t.Errorf("%s round %d: %d runs got host port %d: %v; want exactly one", tc.name, round, len(winners), port, winners)
			}
			// Who holds the port: the listed VMs, and the host.
			var holders []string
			for _, u := range []*tUser{u1, u2} {
				for _, v := range psAll(t, u) {
					for _, f := range v.Ports {
						if f.HostPort == port && v.State == "running" {
							holders = append(holders, u.name+"/"+v.Name)
						}
					}
				}
			}
			if len(holders) != len(winners) {
				t.Errorf("%s round %d: running vms listing port %d: %v; runs that succeeded: %v", tc.name, round, port, holders, winners)
			}
			if len(winners) > 0 && tcpPortFree(port) {
				t.Errorf("%s round %d: host port %d is free although %v got it", tc.name, round, port, winners)
			}
			for _, u := range []*tUser{u1, u2} {
				for vm := range psAll(t, u) {
					u.ok("rm", "-f", vm)
				}
			}
			if !waitFor(5*time.Second, func() bool { return tcpPortFree(port) }) {
				t.Errorf("%s round %d: host port %d still held after rm -f of every vm", tc.name, round, port)
			}
		}
	}
	checkGoneClean(t, u1, "hutchtest1 after the port rounds")
	checkGoneClean(t, u2, "hutchtest2 after the port rounds")
}

// tinyDataDir gives u a data dir on a tmpfs of 2 MiB of its own, and a
// way to leave exactly free KiB free on it. The returned user shares u's
// runtime dir; its VMs are removed before the tmpfs is unmounted.
func tinyDataDir(t *testing.T, u *tUser) (*tUser, func(free int)) {
	t.Helper()
	mnt := filepath.Join(openDir(t), "tiny")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", mnt)
	t.Cleanup(func() {
		if testproc.Command("umount", mnt).Run() != nil {
			testproc.Command("umount", "-l", mnt).Run()
		}
	})
	data := filepath.Join(mnt, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(data, u.uid, u.gid)
	f := *u
	f.dataDir = data
	f.env = nil
	for _, e := range u.env {
		if !strings.HasPrefix(e, "XDG_DATA_HOME=") {
			f.env = append(f.env, e)
		}
	}
	f.env = append(f.env, "XDG_DATA_HOME="+data)
	t.Cleanup(f.cleanup) // registered after the unmount, so it runs first
	fill := filepath.Join(mnt, "fill")
	setFree := func(free int) {
		t.Helper()
		os.Remove(fill)
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		n := int64(st.Bavail)*st.Bsize - int64(free)<<10
		if n < 0 {
			n = 0
		}
		// Written, not truncated: a sparse file takes no space on tmpfs.
		if err := os.WriteFile(fill, make([]byte, n), 0o600); err != nil && free > 0 {
			t.Fatalf("fill the tmpfs to leave %dK: %v", free, err)
		}
	}
	return &f, setFree
}

// The data dir on a full (or nearly full) disk: run fails with one line
// naming the cause, exit 1, and leaves nothing: no staging dir, no half
// record, no overlay, no process; ps -a still works and lists nothing. At
// every amount of free space from none to enough, a run either works fully
// or fails that way.
func TestFullDiskRun(t *testing.T) {
	t.Parallel()
	fu, setFree := tinyDataDir(t, newUser(t, "hutchtest1"))
	fu.ok("ps") // the state dirs, while there is room for them
	image := []string{"run", "-d", "--name", "s", "--memory", "64M", "--network", "none", guest.DiskImage}
	kernel := cheapRun("s", 0)

	attempt := func(t *testing.T, args []string, free int) (ok bool) {
		t.Helper()
		setFree(free)
		before := fu.tree()
		r := tryHutch(fu, args...)
		if r.code == 0 {
			if !checkTruthful(t, fu, "s") {
				t.Errorf("with %dK free, run succeeded but ps -a does not list the vm", free)
			}
			if r := tryHutch(fu, "rm", "-f", "s"); r.code != 0 {
				t.Errorf("with %dK free, rm -f of the vm: %v", free, r)
			}
		} else {
			if r.code != 1 || !isOneHutchLine(r.err) || !strings.Contains(strings.ToLower(r.err), "no space left on device") {
				t.Errorf("with %dK free: %v; want exit 1 and one line naming no space left on device", free, r)
			}
			if vs := psAll(t, fu); len(vs) != 0 {
				t.Errorf("with %dK free, a failed run left %v in ps -a", free, vs)
			}
		}
		waitNoUserProcs(t, fu, 10*time.Second, fmt.Sprintf("with %dK free, hutch %s", free, strings.Join(args, " ")))
		if after := fu.tree(); after != before {
			t.Errorf("with %dK free, hutch %s (%v) left state behind:\nbefore:\n%s\nafter:\n%s", free, strings.Join(args, " "), r, before, after)
		}
		return r.code == 0
	}

	t.Run("full", func(t *testing.T) {
		for _, args := range [][]string{image, kernel} {
			if attempt(t, args, 0) {
				t.Errorf("hutch %s succeeded on a full disk", strings.Join(args, " "))
			}
		}
	})
	// The overlay of the test image takes about 200K and the record a few
	// K: these steps cross every write run makes.
	for _, tc := range []struct {
		name       string
		args       []string
		step, upTo int
	}{{"image", image, 8, 480}, {"kernel", kernel, 4, 64}} {
		t.Run("filling-"+tc.name, func(t *testing.T) {
			succeeded := 0
			for free := 0; free <= tc.upTo && succeeded < 2; free += tc.step {
				if attempt(t, tc.args, free) {
					succeeded++
				}
			}
			if succeeded == 0 {
				t.Errorf("run never succeeded with up to %dK free", tc.upTo)
			}
		})
	}

	// A running VM when the disk fills: reading still works, and the VM
	// can still be stopped and removed; that is how a user makes room.
	t.Run("running-vm", func(t *testing.T) {
		setFree(1024)
		fu.ok(cheapRun("r", 0)...)
		setFree(0)
		for _, args := range [][]string{{"ps", "-a"}, {"inspect", "r"}, {"logs", "r"}, {"port", "r"}} {
			if r := tryHutch(fu, args...); r.code != 0 {
				t.Errorf("hutch %s on a full disk: %v", strings.Join(args, " "), r)
			}
		}
		if r := tryHutch(fu, "stop", "-t", "0", "r"); r.code != 0 {
			t.Errorf("stop -t 0 on a full disk: %v; want the vm stopped", r)
		}
		if got := psAll(t, fu)["r"]; got.State != "stopped" {
			t.Errorf("after stop on a full disk the vm is %q, want stopped", got.State)
		}
		checkTruthful(t, fu, "r")
		if r := tryHutch(fu, "rm", "-f", "r"); r.code != 0 {
			t.Errorf("rm -f on a full disk: %v", r)
		}
		checkGoneClean(t, fu, "after rm -f on a full disk")
	})
}

// badCase is one refused command: its exit code, what its one line of
// stderr says, and (checked for all) that nothing changed on disk.
type badCase struct {
	name string
	args []string
	env  []string // added to the user's environment
	code int
	want []string // every one is in stderr
	// lines is how many lines stderr has when more than one (one per VM
	// named); each must start "hutch: ".
	lines int
	skip  string
}

// Bad input, table-driven: flags, names, sizes, port specs, networks,
// images and files, commands on VMs that do not exist or are in the wrong
// state, output formats and the environment. Each case asserts the exit
// code (2 for usage and input, 1 for failures), the message, one "hutch: "
// line per error, and that the state on disk did not change. This extends
// TestBadInputChangesNothing, which covers the first cases of each kind.
func TestBadInputTable(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok(cheapRun("st", 0)...)
	u.ok("kill", "st")
	u.ok(cheapRun("live", 0)...)

	dir := openDir(t)
	secret := filepath.Join(dir, "secret")
	copyFile(t, guest.Initrd, secret)
	os.Chmod(secret, 0o600) // root's: the test user cannot read it
	notUsers := filepath.Join(dir, "readonly.raw")
	if err := os.WriteFile(notUsers, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	aDir := filepath.Join(dir, "adir")
	os.Mkdir(aDir, 0o755)
	dangling := filepath.Join(dir, "dangling.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/nonexistent/base.qcow2", "-F", "qcow2", dangling, "64M")
	os.Chmod(dangling, 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(fifo, 0o666)
	badVersion := filepath.Join(dir, "badversion.qcow2")
	os.WriteFile(badVersion, []byte("QFI\xfb\x00\x00\x00\x09not a real header"), 0o644)

	k := []string{"--kernel", guest.Kernel, "--initrd", guest.Initrd}
	run := func(args ...string) []string { return append(append([]string{"run", "-d"}, args...), k...) }
	runNoK := func(args ...string) []string { return append([]string{"run", "-d"}, args...) }
	port := func(spec, why string) badCase {
		return badCase{name: "port " + spec, args: run("-p", spec), code: 2, want: []string{fmt.Sprintf("invalid port spec %q: %s", spec, why)}}
	}
	memory := func(size, why string) badCase {
		return badCase{name: "memory " + size, args: run("--memory", size), code: 2, want: []string{fmt.Sprintf("invalid --memory %q: %s", size, why)}}
	}
	name := func(label, n string) badCase {
		return badCase{name: "name " + label, args: run("--name", n), code: 2, want: []string{fmt.Sprintf("invalid name %q: use 1-63 letters", n)}}
	}
	noSuch := func(verb ...string) badCase {
		return badCase{name: strings.Join(verb, " ") + " ghost", args: append(verb, "ghost"), code: 1, want: []string{"no such vm: ghost"}}
	}
	long := strings.Repeat("a", 64)
	twice := freePort(t)

	cases := []badCase{
		// Flags.
		{name: "cpus 0", args: run("--cpus", "0"), code: 2, want: []string{"invalid --cpus 0: give a number from 1 to 255"}},
		{name: "cpus 1000", args: run("--cpus", "1000"), code: 2, want: []string{"invalid --cpus 1000: give a number from 1 to 255"}},
		{name: "cpus -3", args: run("--cpus", "-3"), code: 2, want: []string{"invalid --cpus -3"}},
		{name: "cpus 1.5", args: run("--cpus", "1.5"), code: 2, want: []string{`invalid argument "1.5" for "--cpus" flag`, "see hutch run --help"}},
		{name: "name without value", args: append(run(), "--name"), code: 2, want: []string{"flag needs an argument: --name"}},
		{name: "stop -t without value", args: []string{"stop", "st", "-t"}, code: 2, want: []string{"flag needs an argument: 't' in -t"}},
		{name: "stop -t -1", args: []string{"stop", "-t", "-1", "live"}, code: 2, want: []string{"invalid -t -1: give seconds, 0 or more"}},
		{name: "stop -t too large", args: []string{"stop", "-t", "99999999999999999999", "live"}, code: 2, want: []string{`invalid argument "99999999999999999999" for "-t, --time" flag`}},
		{name: "rm --force=maybe", args: []string{"rm", "--force=maybe", "st"}, code: 2, want: []string{`invalid argument "maybe" for "-f, --force" flag`}},
		{name: "unknown shorthand", args: []string{"ps", "-z"}, code: 2, want: []string{"unknown shorthand flag: 'z' in -z"}},
		{name: "inspect has no --format", args: []string{"inspect", "--format", "json", "st"}, code: 2, want: []string{"unknown flag: --format"}},
		{name: "two images", args: runNoK(guest.DiskImage, guest.DiskImage), code: 2, want: []string{"accepts at most 1 arg(s), received 2"}},
		{name: "inspect two names", args: []string{"inspect", "st", "live"}, code: 2, want: []string{"accepts 1 arg(s), received 2"}},
		{name: "ps with an argument", args: []string{"ps", "st"}, code: 2, want: []string{`unknown command "st" for "hutch ps"`}},
		{name: "stop without a name", args: []string{"stop"}, code: 2, want: []string{"requires at least 1 arg(s)"}},
		// Names.
		name("slash", "/"),
		name("dot-prefixed", ".x"),
		name("64 chars", long),
		name("space", "a b"),
		name("leading dash", "-x"),
		name("non-ascii", "vé"),
		{name: "name empty", args: run("--name", ""), skip: `--name "" is taken as no name (a name is generated), as docker does; decide whether an explicitly empty name should be refused`},
		{name: "inspect empty name", args: []string{"inspect", ""}, code: 2, want: []string{`invalid name ""`}},
		{name: "rm climbing name", args: []string{"rm", "-f", "../" + filepath.Base(u.dataDir)}, code: 2, want: []string{"invalid name"}},
		// Sizes.
		memory("1.5G", "give a size such as 256M or 2G"),
		memory("15M", "a VM needs at least 16M"),
		memory("5T", "at most 4T"),
		memory("-1", "give a size such as 256M or 2G"),
		memory("1025K", "give a whole number of MiB"),
		memory("64Q", "give a size such as 256M or 2G"),
		memory("99999999999999999999", "too large"),
		// Port specs.
		port("[::1:80:80", "unterminated [IPv6] address"),
		port("localhost:80:80", `"localhost" is not an IPv4 address`),
		port("8080:80/sctp", "protocol must be tcp or udp"),
		port("0:80", "host port 0 is out of range 1-65535"),
		port("8080:0", "guest port 0 is out of range 1-65535"),
		port("3-1:3-1", `host port range "3-1" runs backwards`),
		port("[1.2.3.4]:80:80", `"1.2.3.4" is not an IPv6 address`),
		port("1:2:3:4", "too many fields"),
		port("+80:80", `host port "+80" is not a number`),
		{name: "port given twice", args: run("-p", fmt.Sprintf("%d:80", twice), "-p", fmt.Sprintf("%d:81", twice)), code: 2, want: []string{fmt.Sprintf("host port 127.0.0.1:%d/tcp is given twice", twice)}},
		{name: "privileged host port", args: run("-p", "80:80"), code: 2, want: []string{"host port 127.0.0.1:80/tcp is privileged", "e.g. -p 8080:80"}, skip: privilegedPortsOpen()},
		// Networks.
		{name: "bridge=", args: run("--network", "bridge="), code: 2, want: []string{"bridge=", `invalid bridge name ""`}},
		{name: "bridge=a/b", args: run("--network", "bridge=a/b"), code: 2, want: []string{`invalid bridge name "a/b"`}},
		{name: "bridge without =", args: run("--network", "bridge"), code: 2, want: []string{"--network bridge needs a bridge: write bridge=NAME"}},
		{name: "ports with network none", args: run("--network", "none", "-p", "8080:80"), code: 2, want: []string{"-p needs a network: drop --network none"}},
		{name: "ports on a bridge", args: run("--network", "bridge=br0", "-p", "8080:80"), code: 2, want: []string{"-p forwards through passt or slirp"}},
		{name: "ipv6 with slirp", args: run("--network", "slirp", "-p", "[::1]:8080:80"), code: 2, want: []string{"QEMU's slirp cannot forward IPv6 host addresses"}},
		// Images and files.
		{name: "image is a directory", args: runNoK(aDir), code: 2, want: []string{"IMAGE " + aDir + " is a directory: give a file"}},
		{name: "kernel is a directory", args: runNoK("--kernel", aDir), code: 2, want: []string{"--kernel " + aDir + " is a directory"}},
		{name: "unreadable initrd", args: runNoK("--kernel", guest.Kernel, "--initrd", secret), code: 2, want: []string{"--initrd " + secret + ": this user cannot read it"}},
		{name: "missing initrd", args: runNoK("--kernel", guest.Kernel, "--initrd", "/nonexistent/initrd"), code: 2, want: []string{"--initrd /nonexistent/initrd does not exist"}},
		{name: "image with a missing backing file", args: runNoK(dangling), code: 2, want: []string{"IMAGE open image /nonexistent/base.qcow2", "no such file"}},
		{name: "image of an unknown qcow2 version", args: runNoK(badVersion), code: 2, want: []string{"IMAGE " + badVersion, "qcow2 version 9: only versions 2 and 3"}},
		{name: "5000-port range", args: run("-p", "10000-14999:10000-14999"), code: 2, want: []string{"a range of 5000 ports; a VM forwards at most 1024"}},
		{name: "socket path too long", args: run("--name", strings.Repeat("s", 63)), code: 2, want: []string{"past the 107 a unix socket path may have: set XDG_RUNTIME_DIR to a shorter dir"}},
		{name: "fifo as IMAGE", args: runNoK(fifo), code: 2, want: []string{"IMAGE " + fifo + " is not a regular file"}},
		{name: "fifo as kernel", args: runNoK("--kernel", fifo), code: 2, want: []string{"--kernel " + fifo + " is not a regular file"}},
		{name: "fifo as cloud-init", args: runNoK("--ssh", "--cloud-init", fifo, guest.DiskImage), code: 2, want: []string{"--cloud-init " + fifo + " is not a regular file"}},
		{name: "/dev/zero as cloud-init", args: runNoK("--cloud-init", "/dev/zero", guest.DiskImage), code: 2, want: []string{"--cloud-init /dev/zero is not a regular file"}},
		{name: "missing disk", args: run("--disk", "/nonexistent/disk.img"), code: 2, want: []string{"--disk /nonexistent/disk.img does not exist"}},
		{name: "unwritable disk", args: run("--disk", notUsers), code: 2, want: []string{"--disk " + notUsers + ": this user cannot write it"}},
		{name: "unreadable read-only disk", args: run("--disk", secret+",ro"), code: 2, want: []string{"--disk " + secret + ": this user cannot read it"}},
		{name: "empty disk", args: run("--disk", ",ro"), code: 2, want: []string{`invalid --disk ",ro": give PATH[,format=raw|qcow2][,ro|rw]`}},
		{name: "disk of an unknown format", args: run("--disk", notUsers+",format=vmdk"), code: 2, want: []string{"format=vmdk: use format=raw or format=qcow2"}},
		{name: "append without kernel", args: runNoK("--append", "console=ttyS0"), code: 2, want: []string{"--initrd and --append need --kernel"}},
		// Commands on VMs that do not exist, or are in the wrong state.
		noSuch("inspect"), noSuch("logs"), noSuch("logs", "-f"), noSuch("stop"), noSuch("kill"),
		noSuch("rm"), noSuch("rm", "-f"), noSuch("port"), noSuch("console"),
		{name: "stop two ghosts", args: []string{"stop", "ghost", "ghost2"}, code: 1, want: []string{"no such vm: ghost\n", "no such vm: ghost2"}, lines: 2},
		{name: "kill of a stopped vm", args: []string{"kill", "st"}, code: 1, want: []string{`vm "st" is not running`}},
		{name: "console of a stopped vm", args: []string{"console", "st"}, code: 1, want: []string{`vm "st" is not running`}},
		{name: "rm of a running vm", args: []string{"rm", "live"}, code: 1, want: []string{`vm "live" is running: stop it first with hutch stop live, or use hutch rm -f`}},
		{name: "duplicate name of a running vm", args: run("--name", "live"), code: 2, want: []string{`a vm named "live" already exists`}},
		// Output formats.
		{name: "ps --format yaml", args: []string{"ps", "--format", "yaml"}, code: 2, want: []string{`unknown --format "yaml": use table or json`}},
		{name: "ps --format xml", args: []string{"ps", "-a", "--format", "xml"}, code: 2, want: []string{`unknown --format "xml": use table or json`}},
		// The environment.
		{name: "relative XDG_RUNTIME_DIR", args: []string{"ps"}, env: []string{"XDG_RUNTIME_DIR=run"}, code: 1, want: []string{`XDG_RUNTIME_DIR "run" is not an absolute path`}},
		{name: "XDG_RUNTIME_DIR of another user", args: []string{"ps"}, env: []string{"XDG_RUNTIME_DIR=/tmp"}, code: 1, want: []string{"refusing /tmp: owned by uid 0"}},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	before := u.tree()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			c := u.cmd(tc.args...)
			c.Env = append(append([]string{}, u.env...), tc.env...)
			r := u.runCmd(c)
			cmd := "hutch " + strings.Join(tc.args, " ")
			if r.code != tc.code {
				t.Errorf("%s: %v; want exit %d", cmd, r, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err, w) {
					t.Errorf("%s: stderr %q does not say %q", cmd, r.err, w)
				}
			}
			lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n")
			if want := max(tc.lines, 1); len(lines) != want {
				t.Errorf("%s: stderr has %d lines, want %d: %q", cmd, len(lines), want, r.err)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "hutch: ") {
					t.Errorf("%s: stderr line %q does not start with \"hutch: \"", cmd, l)
				}
			}
			if r.out != "" {
				t.Errorf("%s: printed %q on stdout", cmd, r.out)
			}
			if after := u.tree(); after != before {
				t.Errorf("%s changed state:\nbefore:\n%s\nafter:\n%s", cmd, before, after)
				// What it made goes, so the next cases start from the same state.
				for n := range psAll(t, u) {
					if n != "st" && n != "live" {
						u.ok("rm", "-f", n)
					}
				}
				if after := u.tree(); after != before {
					t.Fatalf("state differs even after removing new vms:\n%s", after)
				}
			}
		})
	}
	if v := u.inspect("live"); v.State != "running" {
		t.Errorf("after the table, live is %s", v.State)
	}
	if v := u.inspect("st"); v.State != "stopped" {
		t.Errorf("after the table, st is %s", v.State)
	}

	// Random bytes are not a bad image: qemu-img reads them as raw, and
	// the VM boots them through an overlay that records the raw format
	// (so QEMU never probes the content), leaving the file unchanged.
	t.Run("random bytes image boots as raw", func(t *testing.T) {
		noise := filepath.Join(dir, "noise.img")
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(rand.IntN(256))
		}
		os.WriteFile(noise, b, 0o644)
		facts := fileFacts(t, noise)
		u.ok("run", "-d", "--name", "noise", "--memory", "64M", "--network", "none", noise)
		out, err := testproc.Command("qemu-img", "info", "-U", "--output=json", vmDataDir(u, "noise")+"/disk0.qcow2").Output()
		var info struct {
			BackingFile   string `json:"backing-filename"`
			BackingFormat string `json:"backing-filename-format"`
		}
		if err != nil || json.Unmarshal(out, &info) != nil || info.BackingFile != noise || info.BackingFormat != "raw" {
			t.Errorf("overlay of a random-bytes image: %v %s; want backing %s as raw", err, out, noise)
		}
		u.ok("rm", "-f", "noise")
		if got := fileFacts(t, noise); got != facts {
			t.Errorf("the random-bytes image changed: %s -> %s", facts, got)
		}
		if after := u.tree(); after != before {
			t.Errorf("rm -f noise left state:\n%s", after)
		}
	})
}

// Bad system configuration, read when root runs hutch: every command that
// needs it fails with one line naming the file and the problem, exit 1,
// and touches no system state. Not parallel: it rewrites the machine's
// /etc/hutch/hutch.toml (and puts it back).
func TestBadInputTableSystemConfig(t *testing.T) {
	r := rootUser(t)
	path := "/etc/hutch/hutch.toml"
	if _, err := os.Stat(filepath.Dir(path)); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove(filepath.Dir(path)) }) // only if left empty
	}
	cases := []struct {
		name, content string
		want          []string
	}{
		{"unknown key", "bogus = 1\n", []string{path, `unknown key "bogus"`}},
		{"unknown table", "[leasez]\nfirst = 5\n", []string{path, `unknown key "leasez"`}},
		{"rootless false", "rootless = false\n", []string{"rootless = false", "never runs a VMM as root"}},
		{"rootless not a boolean", "rootless = \"yes\"\n", []string{path, "rootless"}},
		{"leases.first 0", "[leases]\nfirst = 0\n", []string{path, "first = 0 includes uid 0 (root)"}},
		{"leases.first negative", "[leases]\nfirst = -5\n", []string{path, "first = -5 is negative"}},
		{"leases.count 0", "[leases]\ncount = 0\n", []string{path, "count = 0 leaves no ids to lease"}},
		{"leases past the last uid", "[leases]\nfirst = 4294967000\ncount = 1000\n", []string{path, "ends past the highest uid"}},
		{"not TOML", "rootless = [\n", []string{path, "toml"}},
	}
	before := systemState(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			restore := replaceFile(t, path, tc.content)
			defer restore()
			for _, args := range [][]string{{"ps"}, {"inspect", "ghost"}, {"rm", "-f", "ghost"}, cheapRun("cfg", 0)} {
				res := r.run(args...)
				if res.code != 1 || !isOneHutchLine(res.err) {
					t.Errorf("hutch %s as root with %q in %s: %v; want exit 1 and one line", strings.Join(args, " "), tc.content, path, res)
				}
				for _, w := range tc.want {
					if !strings.Contains(res.err, w) {
						t.Errorf("hutch %s as root with %q in %s: stderr %q does not say %q", strings.Join(args, " "), tc.content, path, res.err, w)
					}
				}
			}
			if after := systemState(t); after != before {
				t.Errorf("a refused config changed system state:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// systemState lists what system mode keeps: the VMs' dirs and the leases.
func systemState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, root := range []string{"/run/hutch", "/var/lib/hutch"} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !strings.HasSuffix(p, ".lock") {
				fmt.Fprintln(&b, p)
			}
			return nil
		})
	}
	leases, _ := os.ReadFile("/run/hutch/leases.json")
	b.Write(leases)
	return b.String()
}

// rm -f of a VM whose supervisor is starting it: rm reads the record while
// it still says "created" (no supervisor recorded, so nothing to kill),
// the supervisor then records "running" and gets QEMU up, and rm goes on
// to remove the dir. On a busy host this interleaving needs no help (the
// two-user test meets it); here SIGSTOP holds the supervisor right after
// it made the runtime dir and rm right after it opened the record, so the
// order is certain. Afterwards no supervisor or QEMU may run that no
// record names: no hutch command could see or end it.
func TestConcurrencyRmWhileStarting(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok("ps")
	runs := filepath.Join(u.runDir, "hutch", "vms")
	// A try that comes too late costs a fraction of a second, and on a
	// busy machine many may: the window is from the runtime dir's making
	// to the supervisor's recording itself.
	const attempts = 100
	for attempt := 1; ; attempt++ {
		if attempt > attempts {
			t.Fatalf("could not hold rm -f between reading the record and removing the vm in %d attempts", attempts)
		}
		w := watchDir(t, runs)
		_, doneA := startHutch(t, u, cheapRun("x", 0)...)
		if !w.wait(func(n string) bool { return n == "x" }, 30*time.Second) {
			t.Fatalf("run -d x made no runtime dir: %v", <-doneA)
		}
		w.close()
		// Only command lines are read: the supervisor has little left to
		// do before it records itself, and a full scan of every process's
		// descriptors is slower than that.
		super, ok := findSupervisor(u, "x", 5*time.Second)
		if !ok {
			t.Fatalf("no supervisor for x: %v", <-doneA)
		}
		syscall.Kill(super, syscall.SIGSTOP)
		if v := psAll(t, u)["x"]; v.State != "created" {
			// The supervisor recorded the start before it was held.
			syscall.Kill(super, syscall.SIGCONT)
			<-doneA
			rmForce(t, u, "x", true)
			checkGoneClean(t, u, "after a try that came too late")
			continue
		}
		reads := watchDirFor(t, vmDataDir(u, "x"), unix.IN_OPEN)
		rmCmd, doneRm := startHutch(t, u, "rm", "-f", "x")
		reads.wait(func(n string) bool { return n == "vm.json" }, 30*time.Second)
		rmCmd.Process.Signal(syscall.SIGSTOP)
		reads.close()
		if _, err := os.Stat(vmDataDir(u, "x")); err != nil {
			// rm got past the removal before it was held.
			rmCmd.Process.Signal(syscall.SIGCONT)
			syscall.Kill(super, syscall.SIGCONT)
			t.Logf("attempt %d: rm -f was too fast: %v; run: %v", attempt, <-doneRm, <-doneA)
			tryHutch(u, "rm", "-f", "x")
			checkGoneClean(t, u, "after a try that came too late")
			continue
		}
		// rm holds the vm's lock from reading the record to removing it,
		// so the supervisor cannot record itself in between: it waits, and
		// finds the vm gone. Both go on; neither may leave anything behind.
		syscall.Kill(super, syscall.SIGCONT)
		rmCmd.Process.Signal(syscall.SIGCONT)
		var runA result
		select {
		case runA = <-doneA:
		case <-time.After(2 * bootTimeout):
			rmCmd.Process.Kill()
			t.Fatal("run -d x did not return")
		}
		rm := <-doneRm
		t.Logf("attempt %d: run -d x: %v; rm -f x (held after opening the record): %v", attempt, runA, rm)
		var problems []string
		waitFor(15*time.Second, func() bool { problems = poolProblems(t, u, []string{"x"}); return len(problems) == 0 })
		for _, p := range problems {
			t.Error(p)
		}
		tryHutch(u, "rm", "-f", "x")
		break
	}
	checkGoneClean(t, u, "at the end")
}

// privilegedPortsOpen says why port 80 cannot show a refused bind here:
// when the host lets anyone bind it (net.ipv4.ip_unprivileged_port_start).
func privilegedPortsOpen() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n <= 80 {
		return "net.ipv4.ip_unprivileged_port_start is " + strings.TrimSpace(string(b)) + ": any user may bind port 80 here"
	}
	return ""
}
