package testguest

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/hutch-vm/hutch/test/testproc"
)

//go:embed udpecho/main.go
var udpechoSource []byte

// buildUDPEcho compiles the guest's UDP echo server as a static binary.
func buildUDPEcho() ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "udpecho-")
	if err != nil {
		return nil, fmt.Errorf("build udpecho: %w", err)
	}
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "main.go"), udpechoSource, 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module udpecho\n\ngo 1.21\n"), 0o644)
	cmd := testproc.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", "udpecho", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build udpecho with %s: %v: %s", gobin, err, out)
	}
	return os.ReadFile(filepath.Join(dir, "udpecho"))
}
