//go:build unix

package shutdown

import (
	"log/slog"
	"os"
	"syscall"
	"testing"
)

// An upgrade signal that Upgrade refuses (another upgrade is running)
// leaves a record saying so: WithUpgradeSignal logs Upgrade's result, and
// the operator who sent the signal has nothing else to read.
func TestUpgradeSignalRefusedIsLogged(t *testing.T) {
	got := make(chan chan<- os.Signal, 1)
	var logs logBuffer
	m := New(WithSignals(), seams{notify: captureNotify(got)}, WithUpgradeSignal(syscall.SIGHUP),
		WithLogger(logs.logger(slog.LevelInfo)))
	defer m.Release()
	sigs := <-got
	m.rs.mu.Lock()
	m.rs.upgrading = true // as if an Upgrade were running
	m.rs.mu.Unlock()
	sigs <- syscall.SIGHUP
	logs.waitFor(t, "shutdown: Upgrade: another upgrade is running")
}
