package shutdown

import "os"

// Plan 9 delivers notes, not signals: os.Interrupt is the one Go's
// os/signal maps. No exit code is promised there.
var defaultSignals = []os.Signal{os.Interrupt}

var signalNames = map[os.Signal]string{os.Interrupt: "SIGINT", os.Kill: "SIGKILL"}

// uncatchable reports whether s can never reach the process.
func uncatchable(s os.Signal) bool { return s == os.Kill }

// signalNumber is n in the exit code 128+n of a forced exit: Plan 9 notes
// have no numbers; 2 is SIGINT's elsewhere.
func signalNumber(os.Signal) int { return 2 }
