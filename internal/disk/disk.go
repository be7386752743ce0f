// Package disk prepares a VM's disks: it reads image formats and makes the
// qcow2 overlays that keep base images unwritten.
package disk

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tool is the image utility hutch drives.
const Tool = "qemu-img"

// CreateOverlay makes a qcow2 at path whose backing file is base, so the
// VM writes only to path.
func CreateOverlay(base, baseFormat, path string) error {
	abs, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("resolve image path: %w", err)
	}
	out, err := exec.Command(Tool, "create", "-q", "-f", "qcow2", "-F", baseFormat, "-b", abs, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create overlay over %s: %s", base, strings.TrimSpace(string(out)))
	}
	return nil
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		s := strings.TrimSpace(string(ee.Stderr))
		return strings.TrimPrefix(s, "qemu-img: ")
	}
	return err.Error()
}

// Layer is one file of an image's backing chain.
type Layer struct {
	Path   string
	Format string
}

// Chain returns the image at path and every backing file below it, top
// first, so each can be opened by the privileged side and passed down.
func Chain(path string) ([]Layer, error) {
	bin, err := exec.LookPath(Tool)
	if err != nil {
		return nil, fmt.Errorf("%s not found on PATH: install it (Debian: apt-get install qemu-utils)", Tool)
	}
	out, err := exec.Command(bin, "info", "-U", "--backing-chain", "--output=json", path).Output()
	if err != nil {
		return nil, fmt.Errorf("read image %s: %s", path, stderrOf(err))
	}
	var infos []struct {
		Filename string `json:"filename"`
		Format   string `json:"format"`
	}
	if err := json.Unmarshal(out, &infos); err != nil || len(infos) == 0 {
		return nil, fmt.Errorf("read image %s: qemu-img info gave no chain", path)
	}
	chain := make([]Layer, 0, len(infos))
	for _, in := range infos {
		p := in.Filename
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), p)
		}
		chain = append(chain, Layer{Path: p, Format: in.Format})
	}
	return chain, nil
}
