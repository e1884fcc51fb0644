//go:build unix

package shutdown

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A Unix socket Listen bound at a relative path is removed by the final
// stop even when the service changed its working directory since: the
// file is the one Listen bound, not one relative to where the process is
// when it stops.
func TestFinalStopRemovesRelativeUnixSocketAfterChdir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	m := newTest()
	l, err := m.Listen("unix", "s.sock")
	if err != nil {
		t.Fatal(err)
	}
	servedByManager(m, l)
	if err := m.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "s.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the final stop: %v, want the socket's file removed", err)
	}
}
