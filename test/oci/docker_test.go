package oci

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/console"
	"github.com/hutch-vm/hutch/test/ocitest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// dockerd is a Docker daemon the test runs as root with hutch-runtime
// configured as the runtime "hutch", in directories of its own.
type dockerd struct {
	host string
}

func startDockerd(t *testing.T) *dockerd { return startDockerdOn(t, "none") }

// startDockerdOn starts a daemon whose default network is bridge, an
// existing bridge (or "none").
func startDockerdOn(t *testing.T, bridge string) *dockerd {
	for _, tool := range []string{"dockerd", "docker"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: install docker.io (make deps)", tool)
		}
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	cfg := map[string]any{
		"runtimes":  map[string]any{"hutch": map[string]string{"path": runtimeBin}},
		"hosts":     []string{"unix://" + sock},
		"data-root": filepath.Join(dir, "data"), "exec-root": filepath.Join(dir, "exec"),
		"pidfile": filepath.Join(dir, "docker.pid"),
		// The test's own bridge, if any; the host's firewall and
		// forwarding are not touched.
		"iptables": false, "ip-forward": false, "bridge": bridge,
	}
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dockerd", "--config-file", cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := testproc.StartDaemon(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	d := &dockerd{host: "unix://" + sock}
	deadline := time.Now().Add(60 * time.Second)
	for d.docker("version").Run() != nil {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("dockerd did not answer:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := d.docker("import", rootfsTar, image).CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	return d
}

func (d *dockerd) docker(args ...string) *exec.Cmd {
	return testproc.Command("docker", append([]string{"-H", d.host}, args...)...)
}

// TestDocker runs hutch-runtime as Docker's runtime "hutch" (daemon.json
// "runtimes"), through containerd's runc shim: output and status, a
// terminal, and a detached container with exec, stop and rm.
func TestDocker(t *testing.T) {
	d := startDockerd(t)
	r := runCmd(t, d.docker("run", "--rm", "--runtime", "hutch", "--network", "none", image, "sh", "-c", "echo from docker; uname -r; exit 3"))
	if r.code != 3 || r.stdout != "from docker\n"+guestKernel+"\n" {
		t.Fatalf("docker run: exit %d (want 3), stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}

	// A terminal: the shim must not hold create's output, which
	// containerd's shim reads to its end before it starts the container.
	master, slave, err := console.OpenPty("/dev/ptmx")
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	c := d.docker("run", "--rm", "-it", "--runtime", "hutch", "--network", "none", image, "sh", "-c", "tty; exit 4")
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := &syncBuffer{}
	go io.Copy(out, master)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 || !strings.Contains(out.String(), "/dev/pts/") {
			t.Fatalf("docker run -it: %v (want exit 4), terminal %q", err, out.String())
		}
	case <-time.After(90 * time.Second):
		c.Process.Kill()
		t.Fatalf("docker run -it did not end; terminal %q", out.String())
	}

	name := "hutch-docker-detach"
	if r := runCmd(t, d.docker("run", "-d", "--name", name, "--runtime", "hutch", "--network", "none", image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("docker run -d: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, d.docker("rm", "-f", name))
	if r := runCmd(t, d.docker("exec", name, "sh", "-c", "echo exec-out; exit 2")); r.code != 2 || r.stdout != "exec-out\n" {
		t.Errorf("docker exec: exit %d (want 2), stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	inspect := runCmd(t, d.docker("inspect", "--format", "{{.State.Pid}}", name))
	var pid int
	fmt.Sscan(inspect.stdout, &pid)
	vmm := childQEMU(pid)
	if vmm == 0 {
		t.Fatalf("no VMM under the container's pid %q", inspect.stdout)
	}
	for _, step := range [][]string{{"stop", "-t", "10", name}, {"rm", name}} {
		if r := runCmd(t, d.docker(step...)); r.code != 0 {
			t.Fatalf("docker %s: exit %d: %s", step[0], r.code, r.stderr)
		}
	}
	if !waitGone(vmm) {
		t.Fatalf("the VMM %d outlived docker stop and rm", vmm)
	}

	name = "hutch-docker-vmm9"
	if r := runCmd(t, d.docker("run", "-d", "--name", name, "--runtime", "hutch", "--network", "none", image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("docker run -d: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, d.docker("rm", "-f", name))
	pid = 0
	fmt.Sscan(runCmd(t, d.docker("inspect", "--format", "{{.State.Pid}}", name)).stdout, &pid)
	assertVMMDeathEnds(t, pid, func() (bool, int, string) {
		return inspectEnded(runCmd(t, d.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)).stdout)
	})
}

// dockerBridge is the bridge TestDockerBridge gives its daemon, and the
// host's address on it.
const (
	dockerBridge     = "hutchbr0"
	dockerBridgeHost = "172.31.250.1"
)

// TestDockerBridge: Docker's default network, which is its prestart hook
// (libnetwork-setkey plumbs the container's end of a veth pair into the
// namespace the hook's state names). The container reaches a server on
// the host, and a published port answers through docker-proxy.
func TestDockerBridge(t *testing.T) {
	runCmd(t, testproc.Command("ip", "link", "del", dockerBridge))
	for _, args := range [][]string{{"link", "add", dockerBridge, "type", "bridge"},
		{"addr", "add", dockerBridgeHost + "/24", "dev", dockerBridge}, {"link", "set", dockerBridge, "up"}} {
		if r := runCmd(t, testproc.Command("ip", args...)); r.code != 0 {
			t.Fatalf("ip %s: %s", strings.Join(args, " "), r.stderr)
		}
	}
	t.Cleanup(func() { runCmd(t, testproc.Command("ip", "link", "del", dockerBridge)) })
	d := startDockerdOn(t, dockerBridge)

	l, err := net.Listen("tcp", dockerBridgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "from-host") }))
	url := fmt.Sprintf("http://%s/", l.Addr())
	r := runCmd(t, d.docker("run", "--rm", "--runtime", "hutch", image, "sh", "-c", "ip -4 -o addr show eth0 | wc -l; wget -qO- "+url))
	if r.code != 0 || r.stdout != "1\nfrom-host" {
		t.Fatalf("docker run, the bridge network: wget %s from the container: exit %d, stdout %q, stderr %s", url, r.code, r.stdout, r.stderr)
	}

	name := "hutch-docker-web"
	port := freePort(t)
	defer runCmd(t, d.docker("rm", "-f", name))
	if r := runCmd(t, d.docker("run", "-d", "--name", name, "--runtime", "hutch", "-p", fmt.Sprintf("127.0.0.1:%d:8080", port), image,
		"httpd", "-f", "-p", "8080", "-h", "/www")); r.code != 0 {
		t.Fatalf("docker run -d -p: exit %d: %s", r.code, r.stderr)
	}
	got, err := pollHTTP(fmt.Sprintf("http://127.0.0.1:%d/", port), 90*time.Second)
	if err != nil || !strings.Contains(got, ocitest.PageText) {
		t.Fatalf("docker run -p %d:8080: got %q, %v", port, got, err)
	}

	// docker top lists the container's host processes: hutch-runtime ps
	// gives containerd's shim the shim's pid and everything below it.
	if r := runCmd(t, d.docker("top", name)); r.code != 0 || !strings.Contains(r.stdout, "qemu-system-x86_64") || !strings.Contains(r.stdout, "hutch-runtime") {
		t.Errorf("docker top: exit %d, want the shim and the VMM:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// docker stats reads the cgroup of the container's pid, which is the
	// container's (linux.cgroupsPath), with the VM in it.
	pid, _ := strconv.Atoi(strings.TrimSpace(runCmd(t, d.docker("inspect", "--format", "{{.State.Pid}}", name)).stdout))
	id := strings.TrimSpace(runCmd(t, d.docker("inspect", "--format", "{{.Id}}", name)).stdout)
	vmm := childQEMU(pid)
	if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", vmm)); vmm == 0 || !strings.Contains(string(cg), "memory:/docker/"+id) {
		t.Errorf("the VMM %d is not in the container's memory cgroup /docker/%s:\n%s", vmm, id, cg)
	}
	r = runCmd(t, d.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name))
	var used float64
	var unit string
	fmt.Sscanf(r.stdout, "%f%s", &used, &unit)
	if r.code != 0 || !strings.HasPrefix(unit, "MiB") || used < 64 {
		t.Errorf("docker stats: %q (exit %d, %s); want the VM's memory, over 64 MiB", r.stdout, r.code, r.stderr)
	}
	if r := runCmd(t, d.docker("rm", "-f", name)); r.code != 0 {
		t.Fatalf("docker rm -f: %s", r.stderr)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/docker/" + id); !os.IsNotExist(err) {
		t.Errorf("the container's cgroup outlived it: %v", err)
	}
}
