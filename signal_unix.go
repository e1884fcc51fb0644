//go:build unix

package shutdown

import (
	"os"
	"syscall"
)

var defaultSignals = []os.Signal{syscall.SIGTERM, os.Interrupt}

var signalNames = map[os.Signal]string{
	syscall.SIGTERM: "SIGTERM",
	syscall.SIGINT:  "SIGINT",
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

// signalNumber is n in the exit code 128+n of a forced exit.
func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 1
}
