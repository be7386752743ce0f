// hutch-agent is the guest's /init in OCI mode: it assembles the
// container's root, runs the container's processes and relays their stdio
// to hutch-runtime over a virtio-serial port. Build it static
// (CGO_ENABLED=0): the guest has no libraries.
package main

import (
	"fmt"
	"os"

	"github.com/hutch-vm/hutch/internal/agent"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == agent.Stage {
		agent.RunStage()
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "hutch-agent: runs only as a guest's init (PID 1); hutch-runtime puts it there")
		os.Exit(2)
	}
	agent.Run()
}
