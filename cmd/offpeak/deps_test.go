package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The binary every host runs must not link what only the simulator or the
// documentation build needs: the embedded etcd server alone adds about 10 MB
// to the binary and most of that to the idle agent's resident memory.
func TestBinaryLeavesOutBuildTimeTools(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"go.etcd.io/etcd/server/",
		"github.com/spf13/cobra/doc",
		"github.com/cpuguy83/go-md2man",
		"github.com/offpeak/offpeak/internal/simulate",
		"github.com/offpeak/offpeak/internal/docgen",
		"github.com/offpeak/offpeak/lockers/etcd/etcdtest",
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("offpeak links %s", pkg)
			}
		}
	}
}
