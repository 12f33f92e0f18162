// Package version says which build of offpeak is running: what `make`
// stamped into it, or else what the Go toolchain recorded (the module
// version and the VCS revision of the checkout it was built from).
package version

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker, e.g. -X github.com/offpeak/offpeak/internal/version.version=v1.2.0
// (see the Makefile). They are package variables because -X can set nothing
// else; nothing assigns them at run time.
var (
	version string
	commit  string
	date    string
)

// Unknown is the version of a build that carries neither a stamp nor a
// module version (go run, go test, a build outside a checkout).
const Unknown = "devel"

// Info describes a build.
type Info struct {
	Version string `json:"version"`
	// Commit is the VCS revision; Modified means the tree had uncommitted
	// changes (known only from the toolchain's VCS stamp).
	Commit     string `json:"commit,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	CommitDate string `json:"commit_date,omitempty"`
	// BuildDate is set only by a stamped build.
	BuildDate string `json:"build_date,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Get returns this binary's build information.
func Get() Info {
	return resolve(stamp{version: version, commit: commit, date: date}, debug.ReadBuildInfo)
}

type stamp struct{ version, commit, date string }

// resolve prefers the linker stamp, then the toolchain's build info.
func resolve(s stamp, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{
		Version:   s.version,
		Commit:    s.commit,
		BuildDate: s.date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := read(); ok && bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		vcsRevision := ""
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				vcsRevision = kv.Value
			case "vcs.time":
				info.CommitDate = kv.Value
			case "vcs.modified":
				info.Modified = kv.Value == "true"
			}
		}
		switch {
		case info.Commit == "":
			info.Commit = vcsRevision
		case vcsRevision != "" && vcsRevision != info.Commit:
			// A stamp from another checkout: the toolchain's details
			// belong to a different revision.
			info.CommitDate, info.Modified = "", false
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	return info
}
