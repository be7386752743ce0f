package oci

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// rootfsEntry is the rootfs's name in the container's shared tree.
const rootfsEntry = agent.SharedRootfs

// sharingUnavailable says why a container's files cannot be shared with
// its VM: no virtiofsd on the host, or no virtiofs in the guest's kernel.
func sharingUnavailable(g Guest) error {
	if _, err := virtiofs.Find(); err != nil {
		return err
	}
	if _, err := guest.ResolveModules(filepath.Join(g.ModulesRoot, g.Release), []string{"virtiofs"}); err != nil {
		return fmt.Errorf("the guest kernel %s has no virtiofs module", g.Release)
	}
	return nil
}

// fileShares is the container's tree: its rootfs and every bind mount of a
// directory or file, read-only where the configuration says so (the
// host's mounts enforce it). Binds of anything else (a socket, a device)
// cannot cross into a VM; they are left out and said in the log. The
// returned map gives each shared mount's path in the tree by its index in
// Mounts: a directory of its own holding the source under its base name,
// which the guest's mountinfo then shows as runc's would.
func fileShares(b *Bundle) (*virtiofs.Server, map[int]string, error) {
	bin, err := virtiofs.Find()
	if err != nil {
		return nil, nil, err
	}
	srv := &virtiofs.Server{Binary: bin}
	var names map[int]string
	if srv.Entries, names, err = shareEntries(b); err != nil {
		return nil, nil, err
	}
	if srv.UIDMap, srv.GIDMap, srv.Helpers, err = virtiofs.Mapping(); err != nil {
		return nil, nil, err
	}
	return srv, names, nil
}

// shareEntries are the entries of the container's files in a shared tree,
// and the tree path of each shared bind mount by its index in Mounts.
func shareEntries(b *Bundle) ([]virtiofs.Entry, map[int]string, error) {
	if err := makeMountPoints(b); err != nil {
		return nil, nil, err
	}
	ro := b.Spec.Root != nil && b.Spec.Root.Readonly
	entries := []virtiofs.Entry{{Name: rootfsEntry, Source: b.Rootfs, ReadOnly: ro}}
	names := map[int]string{}
	for i, m := range b.Spec.Mounts {
		if !isBind(m) {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil, nil, fmt.Errorf("bind mount %s: %w", m.Source, err)
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			slog.Warn("a bind mount of something other than a file or directory cannot reach the VM", "source", m.Source, "destination", m.Destination, "type", fi.Mode().Type().String())
			continue
		}
		e := virtiofs.Entry{Name: "m" + strconv.Itoa(i), Source: m.Source, ReadOnly: slices.Contains(m.Options, "ro")}
		if base := filepath.Base(m.Source); base != "/" && base != "." && base != ".." {
			e.Base = base
		}
		names[i] = e.Path()
		entries = append(entries, e)
	}
	return entries, names, nil
}

// sharedSetup fills in the agent's setup for a shared tree: the rootfs and
// the bind mounts come from it, nothing is copied.
func sharedSetup(out *agent.Setup, spec *specs.Spec, names map[int]string) {
	out.Shared = true
	for i, m := range spec.Mounts {
		if isBind(m) {
			name, ok := names[i]
			if !ok {
				continue
			}
			out.Mounts = append(out.Mounts, agent.Mount{Destination: m.Destination, Type: "bind", Shared: name, Options: m.Options})
			continue
		}
		out.Mounts = append(out.Mounts, agent.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
	}
}

// makeMountPoints creates, in a read-only rootfs, the mount points the
// configuration's mounts lack, as runc does before it makes the root
// read-only: the guest cannot create them in a tree the host shares
// read-only. A destination under an earlier mount is that mount's
// business. Paths resolve inside the rootfs (RESOLVE_IN_ROOT), so an
// image's symlink cannot lead the host out of it.
func makeMountPoints(b *Bundle) error {
	if b.Spec.Root == nil || !b.Spec.Root.Readonly {
		return nil
	}
	root, err := unix.Open(b.Rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the rootfs: %w", err)
	}
	defer unix.Close(root)
	var earlier []string
	for _, m := range b.Spec.Mounts {
		dst := filepath.Clean(m.Destination)
		covered := slices.ContainsFunc(earlier, func(e string) bool { return e == "/" || strings.HasPrefix(dst, e+"/") })
		earlier = append(earlier, dst)
		if covered || dst == "/" {
			continue
		}
		file := false
		if isBind(m) {
			if fi, err := os.Stat(m.Source); err == nil && !fi.IsDir() {
				file = true
			}
		}
		if err := makeIn(root, strings.TrimPrefix(dst, "/"), file); err != nil {
			return fmt.Errorf("make the mount point %s in the read-only rootfs: %w", m.Destination, err)
		}
	}
	return nil
}

// makeIn makes path (relative) under the directory root as a directory,
// or an empty file for file, with the directories above it.
func makeIn(root int, path string, file bool) error {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	if fd, err := unix.Openat2(root, path, how); err == nil {
		unix.Close(fd)
		return nil // there already
	}
	parts := strings.Split(path, "/")
	dir := "."
	for i, part := range parts {
		last := i == len(parts)-1
		fd, err := unix.Openat2(root, dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			return err
		}
		switch {
		case last && file:
			var f int
			f, err = unix.Openat(fd, part, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(f)
			}
		default:
			err = unix.Mkdirat(fd, part, 0o755)
		}
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		dir = filepath.Join(dir, part)
	}
	return nil
}
