//go:build unix

package shutdown

import (
	"os"
	"syscall"
)

var defaultSignals = []os.Signal{syscall.SIGTERM, os.Interrupt}

var extraSignalNames = map[os.Signal]string{
	syscall.SIGHUP:  "SIGHUP",
	syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGKILL: "SIGKILL",
	syscall.SIGSTOP: "SIGSTOP",
}

// uncatchable reports whether s is SIGKILL or SIGSTOP, which the kernel
// delivers without asking the process.
func uncatchable(s os.Signal) bool {
	return s == syscall.SIGKILL || s == syscall.SIGSTOP
}
