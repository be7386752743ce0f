package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/guest"
)

// AgentBinary is the guest init hutch-runtime boots; it is looked for next
// to hutch-runtime first, then in PATH.
const AgentBinary = "hutch-agent"

// AgentModules are what the agent loads: the PCI transport, the rootfs
// disk, the NIC, the virtio-serial port it talks on and virtio-fs. Built-in or absent
// ones are skipped (ext4 is built into Debian's kernels).
var AgentModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "ext4", "virtiofs", "virtio_balloon"}

// Guest is the kernel and initramfs a container's VM boots.
type Guest struct {
	Kernel, Initrd, Release string
	ModulesRoot             string
}

// guestVersion changes when the initramfs layout changes, so older cached
// images are not reused.
const guestVersion = "2"

// findAgent locates hutch-agent.
func findAgent() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), AgentBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(AgentBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found next to hutch-runtime or in PATH: install it beside hutch-runtime (make build builds both)", AgentBinary)
}

// BuildGuest returns the host's newest kernel and an initramfs with
// hutch-agent as /init and the modules it needs, built once per kernel
// and agent into cacheDir.
func BuildGuest(cacheDir, bootDir, modulesRoot string) (Guest, error) {
	kernel, release, err := guest.FindHostKernel(bootDir, modulesRoot)
	if err != nil {
		return Guest{}, err
	}
	agentPath, err := findAgent()
	if err != nil {
		return Guest{}, err
	}
	// Every create asks: key the cache on the agent's identity on disk
	// rather than reading and hashing the whole binary each time.
	fi, err := os.Stat(agentPath)
	if err != nil {
		return Guest{}, fmt.Errorf("stat %s: %w", agentPath, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00%s\x00%v", agentPath, fi.Size(), fi.ModTime().UnixNano(), guestVersion, release, AgentModules)
	g := Guest{Kernel: kernel, Release: release, ModulesRoot: modulesRoot,
		Initrd: filepath.Join(cacheDir, initrdPrefix+hex.EncodeToString(h.Sum(nil))[:16]+initrdSuffix)}
	if _, err := os.Stat(g.Initrd); err == nil {
		// A fresh time marks it in use for another create's pruning.
		now := time.Now()
		os.Chtimes(g.Initrd, now, now)
		return g, nil
	}
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return Guest{}, fmt.Errorf("read %s: %w", agentPath, err)
	}
	modDir := filepath.Join(modulesRoot, release)
	var mods []string
	for _, m := range AgentModules {
		if _, err := guest.ResolveModules(modDir, []string{m}); err == nil {
			mods = append(mods, m)
		}
	}
	var buf bytes.Buffer
	if err := (guest.Initramfs{ModDir: modDir, Modules: mods, Init: agent}).Write(&buf); err != nil {
		return Guest{}, fmt.Errorf("build the guest initramfs: %w", err)
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return Guest{}, fmt.Errorf("create %s: %w", cacheDir, err)
	}
	tmp, err := os.CreateTemp(cacheDir, initrdTemp)
	if err != nil {
		return Guest{}, fmt.Errorf("write the guest initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return Guest{}, fmt.Errorf("write the guest initramfs: %w", werr)
	}
	if err := os.Rename(tmp.Name(), g.Initrd); err != nil {
		return Guest{}, fmt.Errorf("write the guest initramfs: %w", err)
	}
	pruneInitrds(cacheDir, g.Initrd, time.Now().Add(-initrdGrace))
	return g, nil
}

// The agent's cached initramfs images: initrdPrefix, a key of the agent
// and kernel, initrdSuffix; one being written is initrdTemp and a random
// tail.
const (
	initrdPrefix = "agent-"
	initrdSuffix = ".initrd.gz"
	initrdTemp   = ".initrd-"
	// initrdGrace is how long an image another create has just found is
	// safe from pruning: that create copies it within seconds.
	initrdGrace = time.Minute
)

// pruneInitrds removes the cached images other than keep that no create
// has used since before, and what a killed create left half-written: a
// new agent or kernel makes every older image useless.
func pruneInitrds(dir, keep string, before time.Time) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		image := strings.HasPrefix(name, initrdPrefix) && strings.HasSuffix(name, initrdSuffix)
		if p == keep || !(image || strings.HasPrefix(name, initrdTemp)) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.ModTime().Before(before) {
			os.Remove(p)
		}
	}
}

// BuildRootfs writes an ext4 image of dir to image with mke2fs -d, which
// needs no privilege and no loop device, keeping owners and modes as they
// are on the host (in a rootless engine's user namespace, as the
// container sees them). The image is the container's own: the guest's
// writes stay in it and never reach dir.
func BuildRootfs(dir, image string) error {
	size, err := treeSize(dir)
	if err != nil {
		return fmt.Errorf("measure rootfs %s: %w", dir, err)
	}
	// Room for metadata and for the container to write; the file is
	// sparse, so unused space costs nothing.
	size = size + size/2 + 512<<20
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create rootfs image: %w", err)
	}
	terr := f.Truncate(size)
	if cerr := f.Close(); terr == nil {
		terr = cerr
	}
	if terr != nil {
		return fmt.Errorf("size rootfs image: %w", terr)
	}
	mke2fs, err := findTool("mke2fs", "e2fsprogs")
	if err != nil {
		return err
	}
	out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0",
		"-E", "no_copy_xattrs", "-L", "rootfs", "-d", dir, image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mke2fs -d %s: %v: %s", dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// findTool finds a program in PATH or the sbin directories, which an
// unprivileged engine's PATH often lacks.
func findTool(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is needed to give the container's root to its VM: install %s", name, pkg)
}

func treeSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil {
			total += fi.Size() + 4096
		}
		return nil
	})
	return total, err
}

// machineSize is the VM's memory and CPUs: the container's limits where
// the configuration sets them, with a floor the guest kernel needs.
func machineSize(s *specs.Spec) (memMiB, cpus int) {
	memMiB, cpus = 256, 1
	if s.Linux == nil || s.Linux.Resources == nil {
		return
	}
	r := s.Linux.Resources
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		memMiB = max(int(*r.Memory.Limit>>20), 128)
	}
	if r.CPU != nil && r.CPU.Quota != nil && r.CPU.Period != nil && *r.CPU.Quota > 0 && *r.CPU.Period > 0 {
		cpus = int((uint64(*r.CPU.Quota) + *r.CPU.Period - 1) / *r.CPU.Period)
		cpus = min(max(cpus, 1), 255)
	}
	return
}
