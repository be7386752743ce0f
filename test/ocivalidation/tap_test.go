package ocivalidation

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// tapResult is one test line of a TAP stream, with the diagnostic lines
// (YAML block, comments) that follow it.
type tapResult struct {
	ok         bool
	number     int
	name       string
	directive  string // SKIP or TODO, upper case; "" for none
	diagnostic []string
}

// failed reports whether the result counts as a failure: a TODO failure
// is expected, a SKIP is not run.
func (r tapResult) failed() bool { return !r.ok && r.directive != "TODO" }

func (r tapResult) String() string {
	s := "ok"
	if !r.ok {
		s = "not ok"
	}
	s = fmt.Sprintf("%s %d - %s", s, r.number, r.name)
	if r.directive != "" {
		s += " # " + r.directive
	}
	return s
}

// tapReport is a parsed TAP stream.
type tapReport struct {
	results []tapResult
	plan    int // -1 when the stream has no plan line
}

var (
	tapLine = regexp.MustCompile(`^(not ok|ok)\s+(\d+)\s*(?:-\s*)?(.*)$`)
	tapPlan = regexp.MustCompile(`^1\.\.(\d+)`)
)

// parseTAP reads a TAP version 13 stream as tap-go writes it.
func parseTAP(out string) tapReport {
	rep := tapReport{plan: -1}
	s := bufio.NewScanner(strings.NewReader(out))
	s.Buffer(make([]byte, 64<<10), 16<<20)
	for s.Scan() {
		line := s.Text()
		if m := tapLine.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[2])
			r := tapResult{ok: m[1] == "ok", number: n, name: strings.TrimSpace(m[3])}
			// "ok 3 # SKIP reason": the directive is the name's start.
			if d, rest, found := strings.Cut(r.name, "#"); found {
				fields := strings.Fields(rest)
				if len(fields) > 0 {
					if dir := strings.ToUpper(fields[0]); dir == "SKIP" || dir == "TODO" {
						r.directive = dir
						r.name = strings.TrimSpace(d)
						if r.name == "" {
							r.name = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), fields[0]))
						}
					}
				}
			}
			rep.results = append(rep.results, r)
			continue
		}
		if m := tapPlan.FindStringSubmatch(line); m != nil {
			rep.plan, _ = strconv.Atoi(m[1])
			continue
		}
		if n := len(rep.results); n > 0 && !strings.HasPrefix(line, "TAP version") {
			rep.results[n-1].diagnostic = append(rep.results[n-1].diagnostic, line)
		}
	}
	return rep
}

func TestParseTAP(t *testing.T) {
	out := `TAP version 13
ok 1 - create MUST generate an error if the ID is not provided
  ---
  {
    "error": "exit status 1"
  }
  ...
not ok 2 - start MUST run the program
ok 3 # SKIP hostname not set
not ok 4 # TODO we need an (r)bind spec to test against
Refer to: https://example.org/spec
1..4
`
	rep := parseTAP(out)
	want := []tapResult{
		{ok: true, number: 1, name: "create MUST generate an error if the ID is not provided"},
		{ok: false, number: 2, name: "start MUST run the program"},
		{ok: true, number: 3, name: "hostname not set", directive: "SKIP"},
		{ok: false, number: 4, name: "we need an (r)bind spec to test against", directive: "TODO"},
	}
	if rep.plan != 4 || len(rep.results) != len(want) {
		t.Fatalf("plan %d, %d results; want 4 and %d", rep.plan, len(rep.results), len(want))
	}
	for i, w := range want {
		g := rep.results[i]
		if g.ok != w.ok || g.number != w.number || g.name != w.name || g.directive != w.directive {
			t.Errorf("result %d = %+v, want %+v", i, g, w)
		}
	}
	if len(rep.results[0].diagnostic) != 5 || len(rep.results[3].diagnostic) != 1 {
		t.Errorf("diagnostics %q and %q", rep.results[0].diagnostic, rep.results[3].diagnostic)
	}
	if rep.results[1].failed() != true || rep.results[3].failed() != false || rep.results[2].failed() != false {
		t.Error("failed(): only a not ok without TODO fails")
	}
}
