package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"
)

func sshCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- COMMAND...]",
		Short: "Log in to a VM started with --ssh, or run a command there",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			cmd, err := e.SSHCommand(a[0], a[1:])
			if err != nil {
				return err
			}
			return runTool(cmd)
		},
	}
}

// runTool runs an ssh client on this terminal and passes its exit status
// on: the remote command's own, or 255 for ssh's failures.
func runTool(cmd *exec.Cmd) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError{ee.ExitCode()}
	}
	return err
}

func sshConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-config NAME",
		Short: "Print an ssh_config block for a VM started with --ssh (Host hutch-NAME)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			t, err := e.SSHTarget(a[0])
			if err != nil {
				return err
			}
			fmt.Print(t.Config("hutch-" + a[0]))
			return nil
		},
	}
}
