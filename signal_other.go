//go:build !unix && !plan9

package shutdown

import (
	"os"
	"syscall"
)

// On Windows, os.Interrupt is Ctrl-C or Ctrl-Break, and SIGTERM is what Go
// delivers for a console close, logoff or system shutdown. No exit code is
// promised there.
var defaultSignals = []os.Signal{syscall.SIGTERM, os.Interrupt}

var signalNames = map[os.Signal]string{
	syscall.SIGTERM: "SIGTERM",
	os.Interrupt:    "SIGINT",
	os.Kill:         "SIGKILL",
}

// uncatchable reports whether s can never reach the process. Outside unix,
// SIGKILL is what Process.Kill does: it cannot be caught either.
func uncatchable(s os.Signal) bool { return s == os.Kill }

// signalNumber is n in the exit code 128+n of a forced exit.
func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 1
}
