package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func FuzzResolveModules(f *testing.F) {
	// modules.dep, modules.builtin, and the requested names separated by
	// spaces; from TestResolveModules and TestResolveModulesMissingFiles.
	f.Add(fakeDep, fakeBuiltin, "virtio_net virtio_blk virtio_mmio")
	f.Add(fakeDep, fakeBuiltin, "virtio_pci")
	f.Add(fakeDep, fakeBuiltin, "virtio virtio virtio_ring")
	f.Add(fakeDep, fakeBuiltin, "loop virtio_ring ext4")
	f.Add(fakeDep, fakeBuiltin, "virtio-blk virtio_rng zipped dangling")
	f.Add(fakeDep, fakeBuiltin, "virtio_ring no_such_mod")
	f.Add(fakeDep, fakeBuiltin, "a")
	f.Add(fakeDep, "", "")
	f.Add("kernel/x.ko:\n", "", "x")
	// Edges: self and longer cycles, a line without ':', comments, CRLF,
	// a module both built in and listed, a dependency listed twice.
	f.Add("a.ko: a.ko\n", "", "a")
	f.Add("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", "", "c")
	f.Add("a.ko b.ko\n", "", "a")
	f.Add("# comment\r\na.ko: b.ko\r\n\r\n", "b.ko\r\n", "a b")
	f.Add("kernel/ext4.ko.zst: kernel/jbd2.ko.gz kernel/jbd2.ko.gz\n", "kernel/ext4.ko\n", "ext4")
	f.Add(":\n: :\n", "", ".")
	f.Fuzz(func(t *testing.T, dep, builtin, names string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
			t.Fatal(err)
		}
		req := strings.Fields(names)

		// A cycle must come back as an error, never as endless recursion.
		type result struct {
			mods []Module
			err  error
		}
		done := make(chan result, 1)
		go func() {
			mods, err := ResolveModules(dir, req)
			done <- result{mods, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ResolveModules(%q, %q, %q) did not return in 10s", dep, builtin, req)
		}
		if r.err != nil {
			return
		}

		// Each module once, after every module it needs, so insmod in this
		// order never meets a missing symbol. A cycle cannot satisfy this.
		loaded := map[string]bool{}
		for i, m := range r.mods {
			if loaded[m.Name] {
				t.Fatalf("ResolveModules(%q, %q): %s listed twice in %v", dep, req, m.Name, r.mods)
			}
			for _, d := range m.Deps {
				if !loaded[d] {
					t.Fatalf("ResolveModules(%q, %q): %s (#%d) comes before its dependency %s", dep, req, m.Name, i, d)
				}
			}
			if m.Name != modNameFromPath(m.Path) {
				t.Fatalf("ResolveModules(%q, %q): module %q has path %q", dep, req, m.Name, m.Path)
			}
			loaded[m.Name] = true
		}
		// Every name asked for is loaded unless the kernel has it built in.
		inBuiltin := map[string]bool{}
		for _, l := range strings.Split(builtin, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				inBuiltin[modNameFromPath(l)] = true
			}
		}
		for _, n := range req {
			if c := canonicalModName(n); !loaded[c] && !inBuiltin[c] {
				t.Fatalf("ResolveModules(%q, %q, %q) succeeded without %s", dep, builtin, req, c)
			}
		}
	})
}
