package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Module is a loadable kernel module resolved from modules.dep.
type Module struct {
	// Name is the canonical module name, with '_' where the file name may
	// have '-' (as the kernel and modprobe name it).
	Name string
	// Path is the module file relative to the modules directory, as
	// modules.dep lists it (e.g. "kernel/drivers/net/virtio_net.ko").
	Path string
	// Deps are the canonical names of the modules this one needs directly.
	Deps []string
}

// ResolveModules returns the modules named, plus everything they depend on,
// in an order where each module comes after all of its dependencies, so that
// loading them one by one with insmod succeeds. Each module appears once.
//
// modDir is a kernel's modules directory (/lib/modules/<release>). Names
// match with '-' and '_' treated as equal, as modprobe does. A name listed in
// modules.builtin is compiled into the kernel and is skipped. A name that is
// neither a module nor built in is an error.
func ResolveModules(modDir string, names []string) ([]Module, error) {
	deps, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, err := readModulesBuiltin(filepath.Join(modDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}

	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var out []Module
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules.dep in %s has a dependency cycle: %s", modDir, strings.Join(append(chain, name), " -> "))
		}
		m, ok := deps[name]
		if !ok {
			// A dependency named only on the right-hand side of a line still
			// has a path; a requested name with no line at all is unknown.
			return fmt.Errorf("kernel module %q not found in %s/modules.dep", name, modDir)
		}
		state[name] = visiting
		for _, d := range m.Deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		out = append(out, Module{Name: m.Name, Path: m.Path, Deps: append([]string(nil), m.Deps...)})
		return nil
	}

	for _, n := range names {
		name := canonicalModName(n)
		if _, ok := deps[name]; !ok && builtin[name] {
			continue
		}
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readModulesDep parses lines of the form "path: dep-path dep-path ...".
func readModulesDep(file string) (map[string]Module, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read module dependencies: %w", err)
	}
	defer f.Close()
	mods := map[string]Module{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		p, rest, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: missing ':'", file, line)
		}
		m := Module{Name: modNameFromPath(p), Path: p}
		for _, dp := range strings.Fields(rest) {
			m.Deps = append(m.Deps, modNameFromPath(dp))
			// Record the dependency's path too, in case its own line is
			// missing (a hand-edited or truncated file).
			if _, ok := mods[modNameFromPath(dp)]; !ok {
				mods[modNameFromPath(dp)] = Module{Name: modNameFromPath(dp), Path: dp}
			}
		}
		mods[m.Name] = m
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return mods, nil
}

// readModulesBuiltin returns the names in modules.builtin. The file is
// optional: a kernel built without any built-in modules may lack it.
func readModulesBuiltin(file string) (map[string]bool, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read built-in module list: %w", err)
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[modNameFromPath(l)] = true
		}
	}
	return out, nil
}

// moduleExts are the suffixes depmod may list, longest first so ".ko.xz"
// is not taken for ".ko".
var moduleExts = []string{".ko.zst", ".ko.xz", ".ko.gz", ".ko"}

func modNameFromPath(p string) string {
	base := filepath.Base(p)
	for _, ext := range moduleExts {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return canonicalModName(base)
}

func canonicalModName(n string) string {
	return strings.ReplaceAll(strings.TrimSpace(n), "-", "_")
}

// FindHostKernel picks the newest bootDir/vmlinuz-<release> that has a
// modules directory modulesRoot/<release>, comparing releases by version
// (6.1.0-10 is newer than 6.1.0-9). The kernel file must be readable by the
// caller: several distributions install it mode 0600.
func FindHostKernel(bootDir, modulesRoot string) (kernelPath, release string, err error) {
	matches, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return "", "", fmt.Errorf("find host kernel: %w", err)
	}
	type cand struct{ path, release string }
	var cands []cand
	for _, m := range matches {
		rel := strings.TrimPrefix(filepath.Base(m), "vmlinuz-")
		if rel == "" {
			continue
		}
		if st, err := os.Stat(m); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if st, err := os.Stat(filepath.Join(modulesRoot, rel)); err != nil || !st.IsDir() {
			continue
		}
		cands = append(cands, cand{m, rel})
	}
	if len(cands) == 0 {
		return "", "", fmt.Errorf("no kernel found: no %s/vmlinuz-<release> with a matching %s/<release> directory; install a kernel package or pass --kernel", bootDir, modulesRoot)
	}
	sort.Slice(cands, func(i, j int) bool { return compareVersions(cands[i].release, cands[j].release) > 0 })
	best := cands[0]
	f, err := os.Open(best.path)
	if err != nil {
		return "", "", fmt.Errorf("host kernel %s is not readable (%w): make it readable or pass --kernel", best.path, err)
	}
	f.Close()
	return best.path, best.release, nil
}

// compareVersions orders release strings the way "sort -V" does for the
// common cases: runs of digits compare as numbers, other runs as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		var ca, cb string
		ca, a = versionChunk(a)
		cb, b = versionChunk(b)
		if c := compareChunk(ca, cb); c != 0 {
			return c
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	default:
		return 1
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func versionChunk(s string) (chunk, rest string) {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

func compareChunk(a, b string) int {
	if isDigit(a[0]) && isDigit(b[0]) {
		a = strings.TrimLeft(a, "0")
		b = strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}
