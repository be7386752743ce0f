package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/store"
)

// Pids are the container's processes on the host: its shim (the pid
// engines know) and everything the shim started, the VMM and its helpers.
// The processes inside the guest have no host pid; `exec ID ps` lists
// them.
func (r Runtime) Pids(id string) ([]int, error) {
	rec, err := r.load(id)
	if err != nil {
		return nil, err
	}
	if rec.Status() == specs.StateStopped {
		return []int{}, nil
	}
	return append([]int{rec.Shim.Pid}, store.Descendants(rec.Shim.Pid)...), nil
}

// PS is runc ps's table: ps(1) run with args (default -ef), its header and
// the lines of the container's pids.
func (r Runtime) PS(id string, args []string, out io.Writer) error {
	pids, err := r.Pids(id)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		args = []string{"-ef"}
	}
	b, err := exec.Command("ps", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("ps %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(ee.Stderr))
		}
		return fmt.Errorf("ps: %w", err)
	}
	return FilterPS(bytes.NewReader(b), pids, out)
}

// FilterPS copies ps(1)'s header and the lines whose PID column holds one
// of pids.
func FilterPS(ps io.Reader, pids []int, out io.Writer) error {
	s := bufio.NewScanner(ps)
	if !s.Scan() {
		return errors.New("ps printed nothing")
	}
	col := slices.Index(strings.Fields(s.Text()), "PID")
	if col < 0 {
		return errors.New("ps printed no PID column")
	}
	fmt.Fprintln(out, s.Text())
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) <= col {
			continue
		}
		if pid, err := strconv.Atoi(f[col]); err == nil && slices.Contains(pids, pid) {
			fmt.Fprintln(out, s.Text())
		}
	}
	return s.Err()
}
