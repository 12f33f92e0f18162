package cli

import (
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	tests := map[string]string{
		"bash": "__start_offpeak",
		"zsh":  "#compdef offpeak",
		"fish": "complete -c offpeak",
	}
	for shell, want := range tests {
		t.Run(shell, func(t *testing.T) {
			out, errOut, code := run(t, &App{Root: t.TempDir()}, "completion", shell)
			if code != 0 || !strings.Contains(out, want) {
				t.Fatalf("completion %s: exit %d, stderr %q, output lacks %q", shell, code, errOut, want)
			}
		})
	}
}
