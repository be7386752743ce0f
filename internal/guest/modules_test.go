package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// A miniature of the real virtio part of modules.dep.
const fakeDep = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/cyc/a.ko: kernel/fs/cyc/b.ko
kernel/fs/cyc/b.ko: kernel/fs/cyc/a.ko
kernel/fs/dangling.ko: kernel/fs/notlisted.ko
kernel/fs/zipped.ko.xz:
`

const fakeBuiltin = `kernel/drivers/block/loop.ko
kernel/fs/ext4/ext4.ko
`

func fakeModDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(fakeDep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(fakeBuiltin), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveModules(t *testing.T) {
	dir := fakeModDir(t)
	tests := []struct {
		name    string
		in      []string
		want    []string // module names in order
		wantErr string
	}{
		{name: "leaf", in: []string{"virtio_ring"}, want: []string{"virtio_ring"}},
		{name: "chain", in: []string{"virtio_blk"}, want: []string{"virtio_ring", "virtio", "virtio_blk"}},
		{
			name: "deps before dependants, shared deps once",
			in:   []string{"virtio_net", "virtio_blk", "virtio_mmio"},
			want: []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net", "virtio_blk", "virtio_mmio"},
		},
		{
			name: "pci transport",
			in:   []string{"virtio_pci"},
			want: []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"},
		},
		{name: "duplicate request", in: []string{"virtio", "virtio", "virtio_ring"}, want: []string{"virtio_ring", "virtio"}},
		{name: "builtin skipped", in: []string{"loop", "virtio_ring", "ext4"}, want: []string{"virtio_ring"}},
		{name: "dash matches underscore in file", in: []string{"virtio-blk"}, want: []string{"virtio_ring", "virtio", "virtio_blk"}},
		{name: "underscore matches dash in file", in: []string{"virtio_rng"}, want: []string{"virtio_ring", "virtio", "virtio_rng"}},
		{name: "compressed suffix stripped", in: []string{"zipped"}, want: []string{"zipped"}},
		{name: "dependency without own line", in: []string{"dangling"}, want: []string{"notlisted", "dangling"}},
		{name: "none", in: nil, want: nil},
		{name: "unknown", in: []string{"virtio_ring", "no_such_mod"}, wantErr: `"no_such_mod"`},
		{name: "cycle", in: []string{"a"}, wantErr: "cycle: a -> b -> a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveModules(dir, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %s", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range got {
				names = append(names, m.Name)
			}
			if !reflect.DeepEqual(names, tt.want) {
				t.Fatalf("got %v, want %v", names, tt.want)
			}
			// Independently of the expected list: every dependency precedes
			// its dependant and nothing repeats.
			seen := map[string]bool{}
			for _, m := range got {
				if seen[m.Name] {
					t.Errorf("%s listed twice", m.Name)
				}
				for _, d := range m.Deps {
					if !seen[d] {
						t.Errorf("%s comes before its dependency %s", m.Name, d)
					}
				}
				seen[m.Name] = true
			}
		})
	}
}

func TestResolveModulesPaths(t *testing.T) {
	got, err := ResolveModules(fakeModDir(t), []string{"virtio-rng"})
	if err != nil {
		t.Fatal(err)
	}
	last := got[len(got)-1]
	want := Module{
		Name: "virtio_rng",
		Path: "kernel/drivers/char/hw_random/virtio-rng.ko",
		Deps: []string{"virtio", "virtio_ring"},
	}
	if !reflect.DeepEqual(last, want) {
		t.Fatalf("got %+v, want %+v", last, want)
	}
}

func TestResolveModulesMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := ResolveModules(dir, []string{"x"}); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Fatalf("no modules.dep: got %v", err)
	}
	// modules.builtin is optional.
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/x.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := ResolveModules(dir, []string{"x"}); err != nil || len(got) != 1 {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestFindHostKernel(t *testing.T) {
	// Under one parent so that an unprivileged copy of this test can reach
	// both (see checkUnreadableKernel).
	root := t.TempDir()
	boot, mods := filepath.Join(root, "boot"), filepath.Join(root, "modules")
	for _, d := range []string{boot, mods} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(p, []byte("k"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := FindHostKernel(boot, mods); err == nil || !strings.Contains(err.Error(), "--kernel") {
		t.Fatalf("empty boot dir: got %v", err)
	}
	for _, rel := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64", "6.1.0-99-amd64"} {
		touch(filepath.Join(boot, "vmlinuz-"+rel), 0o644)
	}
	// 6.1.0-99 has no modules, so it cannot be picked; 6.1.0-10 beats 6.1.0-9
	// although it sorts first as text.
	for _, rel := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"} {
		if err := os.Mkdir(filepath.Join(mods, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	touch(filepath.Join(boot, "vmlinuz.old"), 0o644)
	k, rel, err := FindHostKernel(boot, mods)
	if err != nil {
		t.Fatal(err)
	}
	if rel != "6.1.0-10-amd64" || k != filepath.Join(boot, "vmlinuz-6.1.0-10-amd64") {
		t.Fatalf("got %s %s, want 6.1.0-10-amd64", k, rel)
	}

	if err := os.Chmod(k, 0); err != nil {
		t.Fatal(err)
	}
	checkUnreadableKernel(t, boot, mods)
}

// checkUnreadableKernel expects FindHostKernel to fail on the mode 0000
// kernel. Root reads such a file anyway, so as root the check runs in a
// copy of the test binary as an unprivileged uid.
func checkUnreadableKernel(t *testing.T, boot, mods string) {
	t.Helper()
	if os.Getenv("GUEST_TEST_UNREADABLE_BOOT") == "" && os.Geteuid() == 0 {
		for _, d := range []string{filepath.Dir(filepath.Dir(boot)), filepath.Dir(boot)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// The go tool builds the test binary in a directory only root can
		// enter; run a copy from one the other uid can reach.
		bin := filepath.Join(filepath.Dir(boot), "guest.test")
		data, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestFindHostKernelUnreadableHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "GUEST_TEST_UNREADABLE_BOOT="+boot, "GUEST_TEST_UNREADABLE_MODS="+mods)
		cmd.Dir = filepath.Dir(boot)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFindHostKernelUnreadableHelper") {
			t.Fatalf("unreadable kernel check as uid 65534: %v\n%s", err, out)
		}
		return
	}
	if _, _, err := FindHostKernel(boot, mods); err == nil || !strings.Contains(err.Error(), "make it readable or pass --kernel") {
		t.Fatalf("unreadable kernel: got %v", err)
	}
}

func TestFindHostKernelUnreadableHelper(t *testing.T) {
	boot := os.Getenv("GUEST_TEST_UNREADABLE_BOOT")
	if boot == "" {
		t.Skip("run by TestFindHostKernel as an unprivileged user")
	}
	checkUnreadableKernel(t, boot, os.Getenv("GUEST_TEST_UNREADABLE_MODS"))
}

func TestCompareVersions(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"6.1.0-10", "6.1.0-9", 1},
		{"6.1.0", "6.1.0", 0},
		{"5.10.0", "6.1.0", -1},
		{"6.1.0-010", "6.1.0-9", 1},
		{"6.1", "6.1.0", -1},
		{"6.1.0-1-cloud-amd64", "6.1.0-1-amd64", 1},
	} {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
