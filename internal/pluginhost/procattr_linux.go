package pluginhost

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill the plugin when offpeak dies, even by
// SIGKILL, so no plugin outlives its host. The signal is tied to the OS
// thread that forked the child; Go only retires threads whose goroutine
// exits while locked to them, which this package never does.
func setParentDeath(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
