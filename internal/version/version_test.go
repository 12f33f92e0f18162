package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(mainVersion string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/offpeak/offpeak", Version: mainVersion}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	const rev = "40ebef4c0ffee0000000000000000000000000aa"
	tests := []struct {
		name  string
		stamp stamp
		read  func() (*debug.BuildInfo, bool)
		want  Info
	}{
		{
			name:  "stamped by make",
			stamp: stamp{version: "v1.2.0", commit: rev, date: "2026-01-02T03:04:05Z"},
			read:  vcs("(devel)", "vcs.revision", rev, "vcs.time", "2026-01-01T00:00:00Z", "vcs.modified", "true"),
			want:  Info{Version: "v1.2.0", Commit: rev, Modified: true, CommitDate: "2026-01-01T00:00:00Z", BuildDate: "2026-01-02T03:04:05Z", GoVersion: "go1.26.8"},
		},
		{
			name:  "stamp from another checkout drops the toolchain's details",
			stamp: stamp{version: "v1.2.0", commit: rev},
			read:  vcs("(devel)", "vcs.revision", "1111111111111111111111111111111111111111", "vcs.time", "2026-01-01T00:00:00Z", "vcs.modified", "true"),
			want:  Info{Version: "v1.2.0", Commit: rev, GoVersion: "go1.26.8"},
		},
		{
			// go build in a checkout: Go records a pseudo-version and the VCS state.
			name: "go build",
			read: vcs("v0.0.0-20260101000000-40ebef4c0ffe+dirty", "vcs.revision", rev, "vcs.time", "2026-01-01T00:00:00Z", "vcs.modified", "true"),
			want: Info{Version: "v0.0.0-20260101000000-40ebef4c0ffe+dirty", Commit: rev, Modified: true, CommitDate: "2026-01-01T00:00:00Z", GoVersion: "go1.26.8"},
		},
		{
			// The report: plugins list showed "(devel)", which says nothing.
			name: "go run without VCS information",
			read: vcs("(devel)"),
			want: Info{Version: Unknown, GoVersion: "go1.26.8"},
		},
		{
			name: "no build information at all",
			read: none,
			want: Info{Version: Unknown, GoVersion: runtime.Version()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got := resolve(tt.stamp, tt.read); got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
