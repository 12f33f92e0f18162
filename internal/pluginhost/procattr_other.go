//go:build !linux

package pluginhost

import "os/exec"

// setParentDeath has no portable equivalent outside Linux; Manager.Close
// still stops every plugin it started.
func setParentDeath(*exec.Cmd) {}
