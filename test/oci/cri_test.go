package oci

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/hostproc"
	"github.com/hutch-vm/hutch/test/ocitest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// The CRI tests drive containerd's CRI plugin as the kubelet would, through
// crictl. Nothing is pulled: the pods' sandbox image is the test rootfs
// sleeping, imported like the test image.
const (
	crictlVersion = "v1.37.0"
	criNamespace  = "k8s.io" // the containerd namespace the CRI plugin uses
	criPauseImage = "localhost/hutch-cri-pause"
	// CNI plugins as Debian installs them.
	cniBinDir = "/usr/lib/cni"
	// The pods' network: a bridge the harness makes and addresses itself,
	// so that the bridge plugin need not be the gateway (as one it would
	// turn on the host's IP forwarding) and the host reaches the pods. The
	// subnet is clear of Podman's 10.88.0.0/16 and TestDockerBridge's.
	criBridge     = "hutchcni0"
	criBridgeHost = "172.31.251.1"
	criSubnet     = "172.31.251.0/24"
)

// criEnv is a containerd the test runs as root with its CRI plugin, in
// directories of its own, and crictl to drive it.
type criEnv struct {
	*containerd
	crictlBin  string
	crictlConf string // empty: the host's /etc/crictl.yaml is not read
	log        string // containerd's log
}

// criConfig is containerd's configuration; %[1]s is the environment's
// directory, %[2]s hutch-runtime. The runc handler is the reference the
// hutch handler is held to; both go through containerd's runc shim, as
// Docker's runtime "hutch" does. The sandbox image is local, so the CRI
// plugin never pulls. The snapshotters a CI machine lacks are disabled so
// that containerd's log holds only what matters; opt (containerd's
// /opt/containerd by default) and the pods' network namespaces (else in
// /var/run/netns) are inside the directory. The pods' oom_score_adj is
// kept no lower than containerd's own: a CI container without
// CAP_SYS_RESOURCE cannot give the sandbox the CRI's -998, and runc fails
// every pod with "can't get final child's PID from pipe". The handlers'
// --root stays the shim's default /run/containerd/runc, as with
// startContainerd: hutch-runtime keeps sockets there, and a path under
// t.TempDir() with a 64-character container id would pass the 108 bytes
// a socket's path may have.
const criConfig = `version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "%[1]s/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + criPauseImage + `:latest"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hutch]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hutch.options]
        BinaryName = "%[2]s"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + cniBinDir + `"
    conf_dir = "%[1]s/cni"
`

// criNetwork is the pods' CNI network; %[1]s is the environment's
// directory. The CRI plugin loads one conflist and adds the loopback
// network itself. No ipMasq, portmap or firewall plugin: the host's
// firewall is not touched. host-local keeps its leases in the directory.
const criNetwork = `{
  "cniVersion": "1.0.0",
  "name": "hutch-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "` + criBridge + `",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "%[1]s/cni-ipam",
        "ranges": [[{"subnet": "` + criSubnet + `", "gateway": "` + criBridgeHost + `"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "` + criBridgeHost + `"}]
      }
    }
  ]
}
`

// startCRI starts containerd with its CRI plugin and the two handlers
// runc and hutch, and imports the sandbox and test images.
func startCRI(t *testing.T) *criEnv {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is missing: install runc (make deps)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip is missing: install iproute2 (make deps)")
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			t.Fatalf("the CNI plugin %s is missing from %s: install containernetworking-plugins", p, cniBinDir)
		}
	}
	bin := crictlBinary(t)
	dir := t.TempDir()
	c := &criEnv{
		containerd: &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")},
		crictlBin:  bin,
		crictlConf: filepath.Join(dir, "crictl.yaml"),
		log:        filepath.Join(dir, "containerd.log"),
	}
	cfg := filepath.Join(dir, "config.toml")
	for path, text := range map[string]string{
		c.crictlConf: "",
		cfg:          fmt.Sprintf(criConfig, dir, runtimeBin),
		filepath.Join(dir, "cni", "10-hutch-cri.conflist"): fmt.Sprintf(criNetwork, dir),
	} {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A bridge left by a killed run would hold the address.
	runCmd(t, testproc.Command("ip", "link", "del", criBridge))
	for _, args := range [][]string{{"link", "add", criBridge, "type", "bridge"},
		{"addr", "add", criBridgeHost + "/24", "dev", criBridge}, {"link", "set", criBridge, "up"}} {
		if r := runCmd(t, testproc.Command("ip", args...)); r.code != 0 {
			t.Fatalf("ip %s: %s", strings.Join(args, " "), r.stderr)
		}
	}
	t.Cleanup(func() { runCmd(t, testproc.Command("ip", "link", "del", criBridge)) })

	c.run(t, c.log, "--config", cfg)
	// Pods a failed test left: their shims outlive containerd, and their
	// mounts would keep the directory from being removed.
	t.Cleanup(func() {
		if r := runCmd(t, c.crictl("rmp", "--all", "--force")); r.code != 0 {
			t.Errorf("crictl rmp --all --force: exit %d: %s", r.code, r.stderr)
		}
	})
	c.waitReady(t)

	c.loadImage(t, criPauseImage, `ENTRYPOINT ["/bin/sleep","2147483647"]`)
	c.loadImage(t, image, "")
	for _, img := range []string{criPauseImage, image} {
		if r := runCmd(t, c.crictl("inspecti", img+":latest")); r.code != 0 {
			t.Fatalf("the CRI plugin does not see %s after ctr -n %s images import: %s\ncontainerd's log:\n%s", img, criNamespace, r.stderr, c.logText())
		}
	}
	return c
}

// waitReady waits for the CRI plugin to report the runtime and the
// network ready: a CNI configuration or plugin it cannot load shows here,
// not at the first pod.
func (c *criEnv) waitReady(t *testing.T) {
	t.Helper()
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCmd(t, c.crictl("info"))
		seen := r.stderr
		if r.code == 0 {
			if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
				t.Fatalf("crictl info: %v: %s", err, r.stdout)
			}
			ready := map[string]bool{}
			for _, cond := range info.Status.Conditions {
				ready[cond.Type] = cond.Status
			}
			if ready["RuntimeReady"] && ready["NetworkReady"] {
				return
			}
			seen = fmt.Sprintf("%+v", info.Status.Conditions)
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd's CRI plugin is not ready: %s\ncontainerd's log:\n%s", seen, c.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loadImage loads the test rootfs into the CRI plugin's namespace as
// name, with a Dockerfile instruction applied if change is set: root's
// Podman makes the image archive, ctr imports it.
func (c *criEnv) loadImage(t *testing.T, name, change string) {
	t.Helper()
	archive := filepath.Join(c.dir, "image.tar")
	args := []string{"import"}
	if change != "" {
		args = append(args, "--change", change)
	}
	for _, step := range [][]string{
		append(args, rootfsTar, name),
		{"save", "--format", "docker-archive", "-o", archive, name},
	} {
		if out, err := testproc.Command("podman", step...).CombinedOutput(); err != nil {
			t.Fatalf("podman %s: %v: %s", step, err, out)
		}
	}
	if out, err := c.ctr("--namespace", criNamespace, "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr -n %s images import: %v: %s", criNamespace, err, out)
	}
	os.Remove(archive)
}

// logText is containerd's log without its info lines (mostly the plugins
// it loads): its warnings and errors say why a request failed.
func (c *criEnv) logText() string {
	b, _ := os.ReadFile(c.log)
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "level=info") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// crictl runs crictl against the environment's containerd. The timeout
// bounds each request, not only the connection.
func (c *criEnv) crictl(args ...string) *exec.Cmd {
	ep := "unix://" + c.sock
	return testproc.Command(c.crictlBin, append([]string{"--config", c.crictlConf,
		"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}, args...)...)
}

// crictlOK runs crictl and returns its trimmed output; a failure ends the
// test with containerd's log, where the CRI plugin says why.
func (c *criEnv) crictlOK(t *testing.T, args ...string) string {
	t.Helper()
	r := runCmd(t, c.crictl(args...))
	if r.code != 0 {
		t.Fatalf("crictl %s: exit %d: %s\ncontainerd's log:\n%s", strings.Join(args, " "), r.code, r.stderr, c.logText())
	}
	return strings.TrimSpace(r.stdout)
}

// crictlBuild is crictl, built once per test binary: Debian 12 has no
// cri-tools package.
var crictlBuild struct {
	once sync.Once
	path string
	err  error
}

func crictlBinary(t *testing.T) string {
	crictlBuild.once.Do(func() {
		// In the package's temporary directory (binDir's parent), which
		// TestMain removes.
		gobin := filepath.Join(filepath.Dir(binDir), "cri-tools")
		start := time.Now()
		build := testproc.Command("go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion)
		build.Dir, build.Env = filepath.Dir(binDir), append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			crictlBuild.err = fmt.Errorf("build crictl (go install sigs.k8s.io/cri-tools/cmd/crictl@%s): %v: %s\nthe Go module proxy must be reachable, or the module already in the module cache", crictlVersion, err, out)
			return
		}
		crictlBuild.path = filepath.Join(gobin, "crictl")
		t.Logf("built crictl %s in %v", crictlVersion, time.Since(start).Round(time.Second))
	})
	if crictlBuild.err != nil {
		t.Fatal(crictlBuild.err)
	}
	return crictlBuild.path
}

// CRI configurations as crictl reads them (YAML or JSON with the
// protobuf's field names); only the fields the tests set.
type criMetadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	UID       string `json:"uid,omitempty"`
}

type criPodConfig struct {
	Metadata     criMetadata `json:"metadata"`
	Hostname     string      `json:"hostname"`
	LogDirectory string      `json:"log_directory"`
	Linux        struct{}    `json:"linux"`
}

// criMount is a host directory or file bound into a container.
type criMount struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Readonly      bool   `json:"readonly,omitempty"`
}

type criContainerConfig struct {
	Metadata criMetadata `json:"metadata"`
	Image    struct {
		Image string `json:"image"`
	} `json:"image"`
	Command []string   `json:"command,omitempty"`
	Args    []string   `json:"args,omitempty"`
	LogPath string     `json:"log_path"`
	Mounts  []criMount `json:"mounts,omitempty"`
	Linux   struct {
		SecurityContext struct {
			NamespaceOptions struct {
				Pid int `json:"pid"`
			} `json:"namespace_options"`
		} `json:"security_context"`
	} `json:"linux"`
}

// criPIDContainer is NamespaceMode CONTAINER: a PID namespace of the
// container's own, the kubelet's default (crictl's is the pod's).
const criPIDContainer = 1

// podConfig writes the configuration of a pod named name with hostname,
// for crictl runp, and returns its path. Its containers log under
// logDir(name), which the harness makes as the kubelet would.
func (c *criEnv) podConfig(t *testing.T, name, hostname string) string {
	t.Helper()
	if err := os.MkdirAll(c.logDir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	return c.writeConfig(t, "pod-"+name+".json", criPodConfig{
		Metadata:     criMetadata{Name: name, Namespace: "hutch-test", UID: "hutch-test-" + name},
		Hostname:     hostname,
		LogDirectory: c.logDir(name),
	})
}

func (c *criEnv) logDir(pod string) string { return filepath.Join(c.dir, "pods", pod) }

// containerConfig writes the configuration of a container named name
// running the test image, for crictl create, and returns its path. Its
// log is name.log in its pod's log directory.
func (c *criEnv) containerConfig(t *testing.T, name string, command, args []string, mounts ...criMount) string {
	t.Helper()
	cfg := criContainerConfig{Metadata: criMetadata{Name: name}, Command: command, Args: args, LogPath: name + ".log", Mounts: mounts}
	cfg.Image.Image = image + ":latest"
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = criPIDContainer
	return c.writeConfig(t, "ctr-"+name+".json", cfg)
}

func (c *criEnv) writeConfig(t *testing.T, file string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// criInspect is what crictl inspect and inspectp print that the tests
// read: the process's host pid (containerd's verbose info), the state,
// and a pod's address.
type criInspect struct {
	Status struct {
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Network  struct {
			IP string `json:"ip"`
		} `json:"network"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

func (c *criEnv) inspect(t *testing.T, what, id string) criInspect {
	t.Helper()
	var v criInspect
	out := c.crictlOK(t, what, "--output", "json", id)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("crictl %s %s: %v: %s", what, id, err, out)
	}
	return v
}

// TestCRIHarnessRunc runs a pod and a container in it through the CRI
// plugin with runc, the reference for the hutch handler: the pod has its
// hostname and an address on the test's bridge that reaches the host;
// the container logs, answers exec and stops on SIGTERM; removing the pod
// leaves none of its processes and nothing on the bridge.
func TestCRIHarnessRunc(t *testing.T) {
	c := startCRI(t)
	const hostname = "hutch-cri-runc"
	pod := c.podConfig(t, "runc", hostname)
	podID := c.crictlOK(t, "runp", "--runtime", "runc", pod)
	ctr := c.containerConfig(t, "sh", []string{"sh", "-c",
		`trap "echo stopping; exit 0" TERM; echo from cri; while :; do sleep 1; done`}, nil)
	ctrID := c.crictlOK(t, "create", "--no-pull", podID, ctr, pod)
	c.crictlOK(t, "start", ctrID)

	if got := c.crictlOK(t, "exec", ctrID, "hostname"); got != hostname {
		t.Errorf("crictl exec hostname: %q, want the pod's %q", got, hostname)
	}
	p := c.inspect(t, "inspectp", podID)
	if _, subnet, _ := net.ParseCIDR(criSubnet); !subnet.Contains(net.ParseIP(p.Status.Network.IP)) {
		t.Errorf("the pod's address %q is not in %s", p.Status.Network.IP, criSubnet)
	}
	l, err := net.Listen("tcp", criBridgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "from-host") }))
	if got := c.crictlOK(t, "exec", ctrID, "wget", "-qO-", fmt.Sprintf("http://%s/", l.Addr())); got != "from-host" {
		t.Errorf("wget from the pod to the host on %s: %q", criBridge, got)
	}
	// The shim serves the whole pod: its processes are the pod's.
	ct := c.inspect(t, "inspect", ctrID)
	shim := 0
	if st := procStatus(p.Info.Pid); st != nil {
		fmt.Sscan(st["PPid"], &shim)
	}
	if shim == 0 || ct.Info.Pid == 0 {
		t.Fatalf("no host process for the pod (pid %d, shim %d) or the container (pid %d)", p.Info.Pid, shim, ct.Info.Pid)
	}
	procs := append([]int{shim}, hostproc.Descendants(shim)...)

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(runCmd(t, c.crictl("logs", ctrID)).stdout, "from cri") {
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs never showed the container's output: %+v", runCmd(t, c.crictl("logs", ctrID)))
		}
		time.Sleep(100 * time.Millisecond)
	}

	c.crictlOK(t, "stop", "--timeout", "10", ctrID)
	if ct := c.inspect(t, "inspect", ctrID); ct.Status.State != "CONTAINER_EXITED" || ct.Status.ExitCode != 0 {
		t.Errorf("after crictl stop the container is %s with status %d, want CONTAINER_EXITED and 0 (its TERM trap)", ct.Status.State, ct.Status.ExitCode)
	}
	if r := runCmd(t, c.crictl("logs", ctrID)); r.stdout != "from cri\nstopping\n" {
		t.Errorf("crictl logs: %q, want the start's and the TERM trap's lines", r.stdout)
	}
	c.crictlOK(t, "rm", ctrID)
	c.crictlOK(t, "stopp", podID)
	c.crictlOK(t, "rmp", podID)
	if left := c.crictlOK(t, "pods", "--quiet"); left != "" {
		t.Errorf("crictl pods after rmp: %s", left)
	}
	for _, pid := range procs {
		if !waitGone(pid) {
			t.Errorf("process %d of the pod outlived crictl rmp: %v", pid, procStatus(pid))
		}
	}
	if r := runCmd(t, testproc.Command("ip", "-o", "link", "show", "master", criBridge)); r.stdout != "" {
		t.Errorf("the pod's interface outlived crictl rmp on %s: %s", criBridge, r.stdout)
	}
}

// TestCRIPod: a two-container pod through containerd's CRI with the hutch
// handler runs in one VM. One container reaches the other on 127.0.0.1,
// a host directory mounted in both (an emptyDir as the kubelet makes it)
// is one to both, hostname is the pod's, and the pod's network reaches
// the host. crictl exec, logs, stop, rm, stopp and rmp behave as with
// runc and leave no process.
func TestCRIPod(t *testing.T) {
	c := startCRI(t)
	const hostname = "hutch-cri-pod"
	shared := t.TempDir()
	pod := c.podConfig(t, "hutch", hostname)
	podID := c.crictlOK(t, "runp", "--runtime", "hutch", pod)
	defer runCmd(t, c.crictl("rmp", "--force", podID))
	mount := criMount{ContainerPath: "/shared", HostPath: shared}
	server := c.containerConfig(t, "server", []string{"sh", "-c", "echo from-server > /shared/s.txt; exec httpd -f -p 8080 -h /www"}, nil, mount)
	client := c.containerConfig(t, "client", []string{"sh", "-c",
		`trap "echo stopping; exit 0" TERM; echo from client; while :; do sleep 1; done`}, nil, mount)
	serverID := c.crictlOK(t, "create", "--no-pull", podID, server, pod)
	c.crictlOK(t, "start", serverID)
	clientID := c.crictlOK(t, "create", "--no-pull", podID, client, pod)
	c.crictlOK(t, "start", clientID)

	p := c.inspect(t, "inspectp", podID)
	vmms := qemuPids(func(map[string]string) bool { return true })
	if len(vmms) != 1 || !slices.Contains(hostproc.Descendants(p.Info.Pid), vmms[0]) {
		t.Fatalf("VMMs %v for a pod of two containers; want one, below the sandbox's pid %d", vmms, p.Info.Pid)
	}
	shim := 0
	if st := procStatus(p.Info.Pid); st != nil {
		fmt.Sscan(st["PPid"], &shim)
	}
	procs := append([]int{shim}, hostproc.Descendants(shim)...)

	var page string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if page = runCmd(t, c.crictl("exec", clientID, "wget", "-qO-", "http://127.0.0.1:8080/")).stdout; strings.Contains(page, ocitest.PageText) {
			break
		}
	}
	if !strings.Contains(page, ocitest.PageText) {
		t.Errorf("the client's wget of 127.0.0.1:8080, the server's port in the same pod: %q", page)
	}
	if got := c.crictlOK(t, "exec", clientID, "cat", "/shared/s.txt"); got != "from-server" {
		t.Errorf("the volume shared by both: the client read %q", got)
	}
	c.crictlOK(t, "exec", clientID, "sh", "-c", "echo from-client > /shared/c.txt")
	if b, err := os.ReadFile(filepath.Join(shared, "c.txt")); err != nil || string(b) != "from-client\n" {
		t.Errorf("the client's write on the host: %q, %v", b, err)
	}
	if got := c.crictlOK(t, "exec", clientID, "hostname"); got != hostname {
		t.Errorf("hostname in the client: %q, want the pod's %q", got, hostname)
	}
	if got := c.crictlOK(t, "exec", clientID, "cat", "/proc/1/comm"); got != "sh" {
		t.Errorf("PID 1 in the client is %q, want its own sh", got)
	}
	l, err := net.Listen("tcp", criBridgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "from-host") }))
	if got := c.crictlOK(t, "exec", clientID, "wget", "-qO-", fmt.Sprintf("http://%s/", l.Addr())); got != "from-host" {
		t.Errorf("wget from the pod to the host: %q", got)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(runCmd(t, c.crictl("logs", clientID)).stdout, "from client"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs never showed the client's output: %+v", runCmd(t, c.crictl("logs", clientID)))
		}
	}

	c.crictlOK(t, "stop", "--timeout", "10", clientID)
	if ct := c.inspect(t, "inspect", clientID); ct.Status.State != "CONTAINER_EXITED" || ct.Status.ExitCode != 0 {
		t.Errorf("after crictl stop the client is %s with status %d, want CONTAINER_EXITED and 0 (its TERM trap)", ct.Status.State, ct.Status.ExitCode)
	}
	if r := runCmd(t, c.crictl("logs", clientID)); r.stdout != "from client\nstopping\n" {
		t.Errorf("crictl logs: %q, want the start's and the TERM trap's lines", r.stdout)
	}
	c.crictlOK(t, "rm", clientID)
	c.crictlOK(t, "stop", "--timeout", "2", serverID)
	c.crictlOK(t, "rm", serverID)
	c.crictlOK(t, "stopp", podID)
	c.crictlOK(t, "rmp", podID)
	for _, pid := range procs {
		if !waitGone(pid) {
			t.Errorf("process %d of the pod outlived crictl rmp: %v", pid, procStatus(pid))
		}
	}
	if left := qemuPids(func(map[string]string) bool { return true }); len(left) != 0 {
		t.Errorf("VMMs outlived crictl rmp: %v", left)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), "/pod/") {
		t.Errorf("the pod's bindings outlived it:\n%s", mounts)
	}
}
