package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultHookTimeout bounds a hook that names no timeout, so no command of
// hutch-runtime waits forever on one (runc has no bound).
const defaultHookTimeout = 2 * time.Minute

// Hooks run on the host, in hutch-runtime's own namespaces, as runc runs
// prestart, createRuntime and poststart and poststop. createContainer and
// startContainer, which runc runs in the container's namespaces, run
// there too: the container's namespaces are in a VM, where a host
// executable cannot run, and what these hooks do in practice (set up the
// network of the namespace named by the state's pid) is done from the
// host's side of it. Each runs at runc's moment.
type hookSet string

const (
	// create: once the container's shim and its namespaces exist, before
	// its VM looks at its network, in this order.
	hooksCreate hookSet = "create"
	// start, before the process runs; poststart, after.
	hooksStart     hookSet = "startContainer"
	hooksPoststart hookSet = "poststart"
	hooksPoststop  hookSet = "poststop"
)

func (set hookSet) of(h *specs.Hooks) []specs.Hook {
	if h == nil {
		return nil
	}
	switch set {
	case hooksCreate:
		//nolint:staticcheck // prestart is deprecated, and engines still use it (Docker's network)
		return append(append(append([]specs.Hook{}, h.Prestart...), h.CreateRuntime...), h.CreateContainer...)
	case hooksStart:
		return h.StartContainer
	case hooksPoststart:
		return h.Poststart
	case hooksPoststop:
		return h.Poststop
	}
	return nil
}

// runHooks runs the hooks of set in order, each with the container's state
// on its stdin, and stops at the first that fails.
func runHooks(h *specs.Hooks, set hookSet, st specs.State) error {
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for i, hook := range set.of(h) {
		if err := runHook(hook, state); err != nil {
			return fmt.Errorf("error running %s hook #%d: %w", set, i, err)
		}
	}
	return nil
}

// runHooksWarn runs hooks whose failure the spec says to log and go on
// from (poststart, poststop).
func runHooksWarn(h *specs.Hooks, set hookSet, st specs.State) {
	if err := runHooks(h, set, st); err != nil {
		slog.Warn(err.Error())
	}
}

func runHook(h specs.Hook, state []byte) error {
	timeout := defaultHookTimeout
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			return fmt.Errorf("timeout %d: must be positive", *h.Timeout)
		}
		timeout = time.Duration(*h.Timeout) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := h.Args
	if len(args) == 0 {
		args = []string{h.Path}
	}
	cmd := exec.CommandContext(ctx, h.Path)
	cmd.Args, cmd.Env = args, h.Env
	cmd.Stdin = bytes.NewReader(state)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = time.Second // a hook's children holding its output do not hold us
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("%s: timed out after %s", h.Path, timeout)
	}
	if err != nil {
		return fmt.Errorf("%s: %w, stdout: %s, stderr: %s", h.Path, err, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()))
	}
	return nil
}

// hookState is the state a hook of rec's container reads.
func hookState(rec Record, status specs.ContainerState) specs.State {
	return specs.State{Version: specs.Version, ID: rec.ID, Status: status, Pid: rec.Shim.Pid,
		Bundle: rec.Bundle, Annotations: rec.Annotations}
}
