// Package ocivalidation runs the opencontainers runtime-tools validation
// programs that apply to a VM runtime against hutch-runtime, as their
// README runs them against runc: each program drives the runtime's CLI
// through RUNTIME and prints TAP; some run runtimetest inside the
// container. Every failing TAP case fails the test unless the exclusions
// below name it with the reason it cannot pass.
//
// The programs are built from the runtime-tools version pinned in
// tools/go.mod (a module of its own, see there), with the rootfs tarball
// that ships in that module. Nothing is downloaded but through the Go
// module proxy. The test must run as root, as runc's validation does.
package ocivalidation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/test/testproc"
)

const runtimeTools = "github.com/opencontainers/runtime-tools"

// programs are the validations run, in this order: the lifecycle
// operations, then the ones that check the container from inside.
var programs = []string{"create", "start", "state", "kill", "delete", "pidfile",
	"process", "process_user", "hostname", "mounts", "hooks", "hooks_stdin", "prestart", "prestart_fail",
	"poststart", "poststart_fail", "poststop", "poststop_fail"}

// exclusion is a TAP case that cannot pass against hutch-runtime, named by
// program, number and description (all three must match), and why.
type exclusion struct {
	program string
	number  int
	name    string
	reason  string
}

var exclusions = []exclusion{
	{"start", 7, "exit status 1",
		"the program then creates a container whose config has no process and expects create to succeed; " +
			"create fails as runc's does, with runc's error \"process property must not be empty\", which the " +
			"program reports as a bare t.Fail of the exit status"},
	{"delete", 2, "attempting to `delete` a container that is not `stopped` MUST generate an error",
		"the container is `created`: runc's delete kills and removes a created container without --force " +
			"(its process never ran) and hutch-runtime keeps runc's semantics, which the engines it serves " +
			"are built against; the same rule for a running container (case 4) passes"},
	{"delete", 3, "attempting to `delete` a container that is not `stopped` MUST have no effect on the container",
		"follows from case 2: the created container was deleted, as runc deletes it; the running " +
			"container's case (5) passes"},
	{"hooks_stdin", 1, `the state of the container MUST be passed to "prestart" hook over stdin`,
		"the program wants status \"created\" in a prestart hook's state; runc (libcontainer's " +
			"initProcess.start) passes \"creating\", as hutch-runtime does: the container is not created " +
			"until its create-time hooks have run. The state's id, bundle, pid and annotations are checked " +
			"and pass"},
}

// env is what the programs run with.
type env struct {
	validations string // the programs, runtimetest and the rootfs tarball; their working directory
	wrapper     string // RUNTIME: hutch-runtime with the test's --root and a --log per program
	runtimeBin  string
	state       string // hutch-runtime's --root
	tmp         string // TMPDIR, where the programs make their bundles
	logs        string
}

// ociTempPrefix starts the name of the test's work dir; the reaper kills
// every process running a binary from such a dir.
const ociTempPrefix = "ociv-"

func TestMain(m *testing.M) {
	testproc.Main()
	err := testproc.StartReaper(testproc.Targets{ExeDirs: []string{filepath.Join(os.TempDir(), ociTempPrefix)}, FirstUID: config.DefaultLeaseFirst, CountUID: config.DefaultLeaseCount})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ocivalidation:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestValidation(t *testing.T) {
	e := prepare(t)
	for _, p := range programs {
		t.Run(p, func(t *testing.T) { e.run(t, p) })
	}
	for _, x := range exclusions {
		t.Logf("excluded (reason in its program's log): %s: %d - %s", x.program, x.number, x.name)
	}
}

func prepare(t *testing.T) *env {
	if os.Geteuid() != 0 {
		t.Fatal("the runtime-tools validations must run as root (they create containers as runc's do, with process.user uid 10 among others); run go test as root")
	}
	if runtime.GOARCH != "amd64" {
		t.Fatalf("hutch-runtime's guest and the runtime-tools rootfs are amd64; this is %s", runtime.GOARCH)
	}
	for _, tool := range []string{"go", "qemu-system-x86_64", "mke2fs", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (install the packages of make deps; go from /usr/local/go/bin): %v", tool, err)
		}
	}
	// Short paths: hutch-runtime keeps unix sockets under its --root.
	work, err := os.MkdirTemp("", ociTempPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	e := &env{validations: filepath.Join(work, "v"), state: filepath.Join(work, "state"),
		tmp: filepath.Join(work, "tmp"), logs: filepath.Join(work, "logs")}
	for _, d := range []string{e.validations, e.state, e.tmp, e.logs, filepath.Join(work, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.removeLeftovers(t) })

	_, here, _, _ := runtime.Caller(0)
	here = filepath.Dir(here)
	repo, tools := filepath.Join(here, "..", ".."), filepath.Join(here, "tools")
	start := time.Now()
	e.runtimeBin = filepath.Join(work, "bin", "hutch-runtime")
	goBuild(t, repo, []string{"CGO_ENABLED=0"}, "-o", e.runtimeBin, "./cmd/hutch-runtime")
	goBuild(t, repo, []string{"CGO_ENABLED=0"}, "-ldflags", "-s -w", "-o", filepath.Join(work, "bin", "hutch-agent"), "./cmd/hutch-agent")
	pkgs := []string{"-o", e.validations + "/"}
	for _, p := range programs {
		pkgs = append(pkgs, runtimeTools+"/validation/"+p)
	}
	goBuild(t, tools, nil, pkgs...)
	// runtimetest runs in the guest, from the container's rootfs.
	goBuild(t, tools, []string{"CGO_ENABLED=0"}, "-o", filepath.Join(e.validations, "runtimetest"), runtimeTools+"/cmd/runtimetest")

	list := testproc.Command("go", "list", "-m", "-f", "{{.Dir}}", runtimeTools)
	list.Dir = tools
	out, err := list.Output()
	if err != nil {
		t.Fatalf("find the %s module: %v", runtimeTools, exitErr(err))
	}
	tarball := "rootfs-" + runtime.GOARCH + ".tar.gz"
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), tarball))
	if err != nil {
		t.Fatalf("the rootfs the validations unpack into each bundle: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.validations, tarball), data, 0o644); err != nil {
		t.Fatal(err)
	}

	e.wrapper = filepath.Join(work, "bin", "runtime")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --root %s --log \"$HUTCH_VALIDATION_LOG\" \"$@\"\n",
		shellQuote(e.runtimeBin), shellQuote(e.state))
	if err := os.WriteFile(e.wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("built hutch-runtime, hutch-agent and the runtime-tools programs in %s", time.Since(start).Round(time.Second))
	return e
}

func goBuild(t *testing.T, dir string, extraEnv []string, args ...string) {
	t.Helper()
	cmd := testproc.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// run runs one validation program and judges its TAP.
func (e *env) run(t *testing.T, name string) {
	logFile := filepath.Join(e.logs, name+".log")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.validations, name))
	cmd.Dir = e.validations // runtimetest and the rootfs tarball are found there
	cmd.Env = append(os.Environ(), "RUNTIME="+e.wrapper, "TMPDIR="+e.tmp, "HUTCH_VALIDATION_LOG="+logFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)

	rep := parseTAP(stdout.String())
	var failures []string
	counts := map[string]int{}
	seen := map[int]bool{}
	for _, r := range rep.results {
		x, excluded := excludedCase(name, r)
		switch {
		case excluded:
			seen[r.number] = true
			counts["excluded"]++
			if !r.failed() {
				failures = append(failures, fmt.Sprintf("excluded case %s passes now: drop it from the exclusions", r))
			}
			t.Logf("excluded %q: %s: %s", name, r, x.reason)
		case r.failed():
			counts["failed"]++
			failures = append(failures, r.String()+"\n"+strings.Join(r.diagnostic, "\n"))
		case r.directive == "SKIP":
			counts["skipped"]++
		default:
			counts["passed"]++
		}
	}
	for _, x := range exclusions {
		if x.program == name && !seen[x.number] {
			failures = append(failures, fmt.Sprintf("the exclusion of %d - %s matches no TAP line: fix the table", x.number, x.name))
		}
	}
	if runErr != nil {
		failures = append(failures, fmt.Sprintf("%s exited: %v\nstderr:\n%s", name, runErr, tail(stderr.String(), 4000)))
	}
	if rep.plan < 0 || rep.plan != len(rep.results) {
		failures = append(failures, fmt.Sprintf("TAP plan %d for %d results: the program stopped early", rep.plan, len(rep.results)))
	}
	failures = append(failures, e.leftovers(t)...)
	t.Logf("%s: %d passed, %d skipped, %d excluded, %d failed, in %s",
		name, counts["passed"], counts["skipped"], counts["excluded"], counts["failed"], took)
	if len(failures) > 0 {
		log, _ := os.ReadFile(logFile)
		t.Errorf("runtime-tools validation %s failed:\n%s\n\nhutch-runtime log:\n%s",
			name, strings.Join(failures, "\n"), tail(string(log), 4000))
	}
}

func excludedCase(program string, r tapResult) (exclusion, bool) {
	for _, x := range exclusions {
		if x.program == program && x.number == r.number && x.name == r.name {
			return x, true
		}
	}
	return exclusion{}, false
}

// leftovers reports, and removes, containers the program left in the
// state directory and hutch processes (shims, QEMU) still running for it.
func (e *env) leftovers(t *testing.T) []string {
	var problems []string
	entries, _ := os.ReadDir(e.state)
	for _, d := range entries {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		problems = append(problems, fmt.Sprintf("container %s was left behind", d.Name()))
	}
	if pids := e.processes(); len(pids) > 0 {
		problems = append(problems, fmt.Sprintf("hutch processes of the test still run: %v", pids))
	}
	if len(problems) > 0 {
		e.removeLeftovers(t)
	}
	return problems
}

// processes are the pids whose command line names the test's state
// directory: the shims (hutch-runtime _shim --root STATE) and their VMMs.
func (e *env) processes() []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(e.state+"\x00")) || bytes.Contains(cmdline, []byte(e.state+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (e *env) removeLeftovers(t *testing.T) {
	entries, _ := os.ReadDir(e.state)
	for _, d := range entries {
		if d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			if out, err := testproc.Command(e.runtimeBin, "--root", e.state, "delete", "--force", d.Name()).CombinedOutput(); err != nil {
				t.Logf("delete --force %s: %v: %s", d.Name(), err, out)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := e.processes()
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Logf("killed hutch processes of the test that outlived delete --force: %v", pids)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	return err
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
