package guest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Initramfs describes an initramfs to build.
//
// The result holds the directories an init expects to mount or write to
// (/dev, /proc, /sys, /run, /tmp, /etc, /root), /dev/console (so init has
// stdio before devtmpfs is mounted), the modules in /lib/modules/<name>.ko
// with their load order in /etc/modules.order, and /init.
type Initramfs struct {
	// Busybox is the path of a static busybox binary. When set it is
	// installed as /bin/busybox with a /bin symlink for every applet it
	// reports, so scripts can call applets by name without an install step
	// at boot. /sbin, /usr/bin and /usr/sbin point at /bin.
	Busybox string
	// ModDir is the kernel's modules directory (/lib/modules/<release>).
	ModDir string
	// Modules are the modules to include, resolved with ResolveModules.
	Modules []string
	// Init is the content of /init: a script or a static binary.
	Init []byte
	// Files are extra files by path inside the image. A file is mode 0755
	// when it is under bin/ or sbin/ or its name ends in ".sh", and 0644
	// otherwise. Missing parent directories are created with mode 0755.
	Files map[string][]byte
}

// Write writes the initramfs to w as a gzip-compressed newc cpio archive.
// The same inputs always produce the same bytes.
func (c Initramfs) Write(w io.Writer) error {
	if len(c.Init) == 0 {
		return fmt.Errorf("initramfs: no /init given")
	}
	var mods []Module
	if len(c.Modules) > 0 {
		if c.ModDir == "" {
			return fmt.Errorf("initramfs: modules requested but no modules directory given")
		}
		var err error
		if mods, err = ResolveModules(c.ModDir, c.Modules); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}

	a := NewArchive(w)
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{
		{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755},
		{"tmp", 0o777 | os.ModeSticky}, {"etc", 0o755}, {"root", 0o700},
		{"bin", 0o755}, {"lib", 0o755}, {"lib/modules", 0o755}, {"usr", 0o755},
	} {
		if err := a.Dir(d.name, d.mode); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := a.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	for _, l := range [][2]string{{"sbin", "bin"}, {"usr/bin", "../bin"}, {"usr/sbin", "../bin"}} {
		if err := a.Symlink(l[0], l[1]); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}

	if c.Busybox != "" {
		if err := addBusybox(a, c.Busybox); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}

	var order strings.Builder
	for _, m := range mods {
		data, err := readModule(filepath.Join(c.ModDir, m.Path))
		if err != nil {
			return fmt.Errorf("initramfs: module %s: %w", m.Name, err)
		}
		p := "/lib/modules/" + m.Name + ".ko"
		if err := a.File(p, 0o644, data); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		order.WriteString(p + "\n")
	}
	if err := a.File("etc/modules.order", 0o644, []byte(order.String())); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}

	names := make([]string, 0, len(c.Files))
	for n := range c.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := a.File(n, extraFileMode(n), c.Files[n]); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}

	if err := a.File("init", 0o755, c.Init); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := a.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

func extraFileMode(name string) os.FileMode {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if strings.HasPrefix(n, "bin/") || strings.HasPrefix(n, "sbin/") || strings.HasSuffix(n, ".sh") {
		return 0o755
	}
	return 0o644
}

func addBusybox(a *Archive, bbPath string) error {
	data, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	applets, err := BusyboxApplets(bbPath)
	if err != nil {
		return err
	}
	if err := a.File("bin/busybox", 0o755, data); err != nil {
		return err
	}
	for _, ap := range applets {
		if ap == "busybox" || strings.Contains(ap, "/") {
			continue
		}
		if err := a.Symlink("bin/"+ap, "busybox"); err != nil {
			return err
		}
	}
	return nil
}

// BusyboxApplets returns the applets a busybox binary provides, sorted, as
// reported by "busybox --list". It runs the binary, which must therefore be
// built for the host's architecture.
func BusyboxApplets(bbPath string) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(bbPath, "--list")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets with %s --list: %w: %s", bbPath, err, strings.TrimSpace(stderr.String()))
	}
	applets := strings.Fields(string(out))
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list reported no applets", bbPath)
	}
	sort.Strings(applets)
	return applets, nil
}

// readModule returns an uncompressed module: busybox insmod and the kernel
// without CONFIG_MODULE_DECOMPRESS need one. Only gzip can be undone with
// the standard library; other compressions are refused by name.
func readModule(p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(p, ".ko.gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", p, err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", p, err)
		}
		return data, nil
	default:
		return nil, fmt.Errorf("%s: unsupported module compression (only .ko and .ko.gz)", p)
	}
}
