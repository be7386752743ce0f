package vm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// planShares checks every -v against the host and returns the VM's file
// server, or nil without shares. A share must be a directory this user
// can read, not /, not inside hutch's own state, and, when writable, not
// holding it: a guest that could write VM records could change what the
// next start runs.
func (e *Engine) planShares(s *Spec, paths store.Paths) (*virtiofs.Server, []virtiofs.GuestMount, error) {
	if len(s.Volumes) == 0 {
		return nil, nil, nil
	}
	bin, err := virtiofs.Find()
	if err != nil {
		return nil, nil, invalid("-v: %v", err)
	}
	var own []string
	for _, d := range []string{e.Layout.DataRoot, e.Layout.RunRoot, e.Layout.CacheRoot} {
		if d == "" {
			continue
		}
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		own = append(own, d)
	}
	srv := &virtiofs.Server{Binary: bin, Root: paths.FS()}
	var mounts []virtiofs.GuestMount
	for i, v := range s.Volumes {
		real, err := filepath.EvalSymlinks(v.Source)
		if err != nil {
			return nil, nil, invalid("-v %s: %s does not exist: create it or fix the path", v.Source, v.Source)
		}
		f, err := os.Open(real)
		if err != nil {
			return nil, nil, invalid("-v %s: this user cannot open it: fix its permissions", v.Source)
		}
		fi, err := f.Stat()
		f.Close()
		switch {
		case err != nil:
			return nil, nil, invalid("-v %s: %v", v.Source, err)
		case !fi.IsDir():
			return nil, nil, invalid("-v %s is not a directory: share the directory that holds it", v.Source)
		case real == "/":
			return nil, nil, invalid("-v %s shares the host's whole filesystem: share a directory below /", v.Source)
		}
		for _, d := range own {
			if real == d || strings.HasPrefix(real, d+"/") {
				return nil, nil, invalid("-v %s is inside hutch's own state (%s): share a directory of your own", v.Source, d)
			}
			if !v.ReadOnly && strings.HasPrefix(d, real+"/") {
				return nil, nil, invalid("-v %s holds hutch's own state (%s), which a guest could rewrite to change what hutch runs: add :ro, or share a directory that does not hold it", v.Source, d)
			}
		}
		name := strconv.Itoa(i)
		srv.Entries = append(srv.Entries, virtiofs.Entry{Name: name, Source: real, ReadOnly: v.ReadOnly})
		mounts = append(mounts, virtiofs.GuestMount{Name: name, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	if srv.UIDMap, srv.GIDMap, srv.Helpers, err = virtiofs.Mapping(); err != nil {
		return nil, nil, err
	}
	return srv, mounts, nil
}

// microHasVirtiofs says whether the micro VM's kernel can mount a share.
func microHasVirtiofs(release string) bool {
	_, err := guest.ResolveModules(filepath.Join("/lib/modules", release), []string{"virtiofs"})
	return err == nil
}
