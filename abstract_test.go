package shutdown

import "runtime"

var abstractSockets = runtime.GOOS == "linux"
