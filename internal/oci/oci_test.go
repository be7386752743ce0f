package oci

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func writeBundle(t *testing.T, config string, rootfs bool) string {
	dir := t.TempDir()
	if rootfs {
		os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
	}
	if config != "" {
		os.WriteFile(filepath.Join(dir, ConfigFile), []byte(config), 0o644)
	}
	return dir
}

func TestLoadBundle(t *testing.T) {
	good := `{"ociVersion":"1.0.2-dev","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"}}`
	for _, tc := range []struct {
		name, config string
		rootfs       bool
		want         string // "" for success
	}{
		{"good", good, true, ""},
		{"1.2 spec", strings.Replace(good, "1.0.2-dev", "1.2.0", 1), true, ""},
		{"no config", "", true, "JSON specification file config.json not found"},
		{"invalid JSON", `{"ociVersion":`, true, "parse "},
		{"no version", `{"root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"}}`, true, "no ociVersion"},
		{"version 2", strings.Replace(good, "1.0.2-dev", "2.0.0", 1), true, `unsupported ociVersion "2.0.0"`},
		{"version garbage", strings.Replace(good, "1.0.2-dev", "1.0", 1), true, "unsupported ociVersion"},
		{"no rootfs", good, false, "rootfs ("},
		{"no root", `{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"}}`, true, "root must be specified"},
		{"no process", `{"ociVersion":"1.0.2","root":{"path":"rootfs"}}`, true, "process property must not be empty"},
		{"no args", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/"}}`, true, "args must not be empty"},
		{"relative cwd", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"tmp"}}`, true, "not an absolute path"},
		{"relative mount", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"},"mounts":[{"destination":"proc"}]}`, true, "mount destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := LoadBundle(writeBundle(t, tc.config, tc.rootfs))
			if tc.want == "" {
				if err != nil || !filepath.IsAbs(b.Rootfs) {
					t.Fatalf("LoadBundle: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadBundle: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	for _, id := range []string{"a", "abc-1.2_x", "0123456789abcdef"} {
		if err := CheckID(id); err != nil {
			t.Errorf("CheckID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a b", "a\n"} {
		if err := CheckID(id); err == nil {
			t.Errorf("CheckID(%q) accepted", id)
		}
	}
}

func TestChooseVMMUser(t *testing.T) {
	user := specs.User{UID: 1234, GID: 1235, AdditionalGids: []uint32{0, 27, 1235, 27}}
	for _, tc := range []struct {
		name       string
		euid       int
		rootIsUser bool
		user       specs.User
		kvm        []uint32
		want       VMMUser
	}{
		// The engine's user has groups 0 and 27 (as if root were in sudo);
		// the image asks for disk (6), shadow (42) and 999 too.
		{"unprivileged engine", 1000, false, user, nil, VMMUser{Kind: KindSelf}},
		{"rootless engine's namespace", 0, true, user, nil, VMMUser{Kind: KindNamespaceRoot, Groups: []uint32{}}},
		{"root, container user", 0, false, user, nil, VMMUser{Kind: KindProcessUser, UID: 1234, GID: 1235, Groups: []uint32{27}}},
		{"root, container user, kvm", 0, false, user, []uint32{108}, VMMUser{Kind: KindProcessUser, UID: 1234, GID: 1235, Groups: []uint32{27, 108}}},
		{"root engine without the asked groups", 0, false, specs.User{UID: 1234, GID: 1235, AdditionalGids: []uint32{6, 42, 999}}, nil,
			VMMUser{Kind: KindProcessUser, UID: 1234, GID: 1235, Groups: []uint32{}}},
		{"root, container root", 0, false, specs.User{}, nil, VMMUser{Kind: KindLease, Groups: []uint32{}}},
		{"root, container root, kvm", 0, false, specs.User{}, []uint32{108}, VMMUser{Kind: KindLease, Groups: []uint32{108}}},
		{"root, uid but group 0", 0, false, specs.User{UID: 5}, nil, VMMUser{Kind: KindLease, Groups: []uint32{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ChooseVMMUser(tc.euid, tc.rootIsUser, tc.user, tc.kvm, []uint32{0, 27})
			if got.Kind != tc.want.Kind || got.UID != tc.want.UID || got.GID != tc.want.GID || !slices.Equal(got.Groups, tc.want.Groups) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMachineSize(t *testing.T) {
	limit, quota, period := int64(1<<30), int64(150000), uint64(100000)
	s := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit}, CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}}}
	if mem, cpus := machineSize(s); mem != 1024 || cpus != 2 {
		t.Fatalf("machineSize = %d MiB, %d CPUs; want 1024, 2", mem, cpus)
	}
	small := int64(16 << 20)
	s.Linux.Resources.Memory.Limit = &small
	if mem, _ := machineSize(s); mem != 128 {
		t.Fatalf("a 16 MiB limit gives %d MiB, want the 128 MiB floor", mem)
	}
	if mem, cpus := machineSize(&specs.Spec{}); mem != 256 || cpus != 1 {
		t.Fatalf("defaults %d MiB, %d CPUs", mem, cpus)
	}
}

func TestStateJSON(t *testing.T) {
	rec := Record{ID: "c", Bundle: "/b", Annotations: map[string]string{"a": "b"}}
	b, _ := json.Marshal(rec.State())
	var st map[string]any
	json.Unmarshal(b, &st)
	if st["status"] != "stopped" || st["pid"] != float64(0) || st["ociVersion"] != specs.Version || st["bundle"] != "/b" {
		t.Fatalf("state of a container without a live shim: %s", b)
	}
}

func TestChooseGuestNet(t *testing.T) {
	cidr := func(s string) *net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	for _, tc := range []struct {
		name string
		used []*net.IPNet
		want string
	}{
		{"empty namespace", nil, "10.0.2.0/24"},
		{"a default route only", []*net.IPNet{cidr("0.0.0.0/0")}, "10.0.2.0/24"},
		{"slirp4netns", []*net.IPNet{cidr("127.0.0.1/8"), cidr("10.0.2.100/24"), cidr("0.0.0.0/0"), cidr("10.0.2.0/24")}, "10.0.3.0/24"},
		{"a /16 over both", []*net.IPNet{cidr("10.0.0.0/16")}, ""},
		{"a wide net", []*net.IPNet{cidr("10.0.2.0/23"), cidr("10.0.4.7/32")}, "10.0.5.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ChooseGuestNet(tc.used)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("chose %s inside a used /16", g.Net)
				}
				return
			}
			if err != nil || g.Net.String() != tc.want {
				t.Fatalf("ChooseGuestNet = %v, %v; want %s", g.Net, err, tc.want)
			}
			if !g.Net.Contains(g.Address) || !g.Net.Contains(g.Gateway) || !g.Net.Contains(g.DNS) || g.CIDR() != g.Address.String()+"/24" {
				t.Fatalf("addresses %+v outside %s", g, g.Net)
			}
		})
	}
}

func TestParseRoutes(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"tap0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"tap0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	nets, err := ParseRoutes(strings.NewReader(table))
	if err != nil || len(nets) != 2 || nets[0].String() != "0.0.0.0/0" || nets[1].String() != "10.0.2.0/24" {
		t.Fatalf("ParseRoutes = %v, %v", nets, err)
	}
	if _, err := ParseRoutes(strings.NewReader("head\ntap0 zz 0 0 0 0 0 00FFFFFF\n")); err == nil {
		t.Fatal("a bad line was accepted")
	}
}

// TestLongSocketPath: a socket deeper than sun_path allows is still
// listened on and reached, through its directory's descriptor.
func TestLongSocketPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	os.MkdirAll(dir, 0o700)
	path := filepath.Join(dir, "shim.sock")
	if len(path) <= maxSocketPath {
		t.Fatalf("path %d bytes long: not long enough to test", len(path))
	}
	l, err := listenUnix("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.AcceptUnix(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	c, err := dialUnix("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the socket is not at its path: %v", err)
	}
}

// A guest's port report is bounded and checked: no port 0 or past 65535,
// no repeats, at most maxForwards.
func TestValidPorts(t *testing.T) {
	var flood []int
	for i := range 100000 {
		flood = append(flood, i%70000-5)
	}
	got := validPorts(flood)
	if len(got) != maxForwards {
		t.Fatalf("%d ports kept from a flood, want %d", len(got), maxForwards)
	}
	seen := map[int]bool{}
	for _, p := range got {
		if p < 1 || p > 65535 || seen[p] {
			t.Fatalf("kept %d", p)
		}
		seen[p] = true
	}
	if got := validPorts([]int{80, 80, 0, -1, 65536, 443}); !slices.Equal(got, []int{80, 443}) {
		t.Fatalf("validPorts = %v", got)
	}
}
