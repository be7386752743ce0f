package main

import (
	"fmt"
	"os"
	"time"

	"github.com/hutch-vm/hutch/internal/virtiofs"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == virtiofs.StageCommand {
		fmt.Fprintln(os.Stderr, virtiofs.Stage(os.Args[2]))
		os.Exit(1)
	}
	bin, _ := virtiofs.Find()
	os.MkdirAll(os.Args[1], 0o700)
	srv := virtiofs.Server{Binary: bin, Root: os.Args[1], Entries: []virtiofs.Entry{{Name: "0", Source: os.Args[2]}}}
	srv.UIDMap, srv.GIDMap, srv.Helpers, _ = virtiofs.Mapping()
	self, _ := os.Executable()
	cmd, conn, err := srv.Start(self, os.Stderr)
	fmt.Println(cmd, conn, err)
	time.Sleep(2 * time.Second)
	fmt.Println(cmd.ProcessState)
	cmd.Process.Kill()
	cmd.Wait()
	fmt.Println(cmd.ProcessState)
}
