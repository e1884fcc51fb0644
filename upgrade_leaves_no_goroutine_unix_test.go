//go:build unix

package shutdown

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// A successful Upgrade leaves no goroutine behind in the old process once
// its shutdown has finished, although the new process runs on: nothing
// outlives a finished shutdown but an abandoned hook.
func TestSuccessfulUpgradeLeavesNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	// The new process, this test binary, runs upgradeChild on the socket.
	t.Setenv(childEnv, "upgrade")
	t.Setenv(netEnv, "tcp 127.0.0.1:0")
	t.Setenv(newEnv, "ok")
	m := newTest()
	l, err := m.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	servedByManager(m, l)
	m.rs.mu.Lock()
	m.cfg.binary = os.Args[0]
	m.rs.mu.Unlock()
	if err := m.Upgrade(); err != nil {
		t.Fatalf("Upgrade() = %v", err)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v", err)
	}
	up := (*upgradedError)(nil)
	if !errors.As(context.Cause(m.Context()), &up) {
		t.Fatalf("cause %v, want an upgrade's", context.Cause(m.Context()))
	}
	defer syscall.Kill(up.pid, syscall.SIGKILL)
	if err := goleak.Find(before); err != nil {
		t.Errorf("after the upgrade's shutdown, with the new process %d running: %v", up.pid, err)
	}
}
