// Package oci is hutch-runtime: runc's command-line semantics, with each
// container's process run by hutch-agent inside a small VM whose VMM is
// never root. A container is a directory under the runtime's root holding
// its state, the block image of its root filesystem, and the socket of its
// shim: the host process whose pid engines see as the container's.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/cgroup"
)

// ConfigFile is the bundle's OCI configuration.
const ConfigFile = "config.json"

// Bundle is a validated OCI bundle.
type Bundle struct {
	Dir    string
	Rootfs string // absolute
	Spec   *specs.Spec
}

// LoadBundle reads and checks dir/config.json. The messages follow runc's
// where engines or users look for them.
func LoadBundle(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(abs, ConfigFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("JSON specification file %s not found in bundle %s", ConfigFile, abs)
		}
		return nil, fmt.Errorf("read %s: %w", ConfigFile, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(abs, ConfigFile), err)
	}
	if err := checkSpec(&spec); err != nil {
		return nil, err
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(abs, root)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("rootfs (%s) does not exist", root)
	}
	return &Bundle{Dir: abs, Rootfs: root, Spec: &spec}, nil
}

var versionRE = regexp.MustCompile(`^1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.+-]+)?$`)

func checkSpec(s *specs.Spec) error {
	if s.Version == "" {
		return errors.New("config.json has no ociVersion: it is not an OCI runtime configuration")
	}
	if !versionRE.MatchString(s.Version) {
		return fmt.Errorf("unsupported ociVersion %q: hutch-runtime runs runtime-spec 1.x configurations (this one is %s)", s.Version, specs.Version)
	}
	if s.Root == nil || s.Root.Path == "" {
		return errors.New("root must be specified: config.json has no root.path")
	}
	if s.Process == nil {
		return errors.New("process property must not be empty")
	}
	if len(s.Process.Args) == 0 {
		return errors.New("args must not be empty")
	}
	if s.Process.Cwd == "" || !filepath.IsAbs(s.Process.Cwd) {
		return fmt.Errorf("cwd %q is not an absolute path", s.Process.Cwd)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("mount destination %q is not an absolute path", m.Destination)
		}
	}
	if s.Linux != nil && s.Linux.CgroupsPath != "" {
		if _, err := cgroup.ContainerPath(s.Linux.CgroupsPath); err != nil {
			return err
		}
	}
	return nil
}

// validID is runc's rule for container ids.
var validID = regexp.MustCompile(`^[\w+-\.]+$`)

// CheckID refuses ids that could name something outside the root.
func CheckID(id string) error {
	if id == "" || id == "." || id == ".." || !validID.MatchString(id) || strings.Contains(id, "/") {
		return fmt.Errorf("invalid container id format: %s", id)
	}
	return nil
}
