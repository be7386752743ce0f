// Command buildguest builds (or reuses from its cache) the test guest and
// prints where its files are, for the demo and the benchmarks.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/hutch-vm/hutch/test/testguest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: buildguest CACHE_DIR")
		os.Exit(2)
	}
	g, err := testguest.Build(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildguest:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(g)
}
