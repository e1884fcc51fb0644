//go:build unix

package shutdown

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A service started as ./name from its directory, which then changes its
// working directory, upgrades twice: each new process starts in the
// directory the first one started in, so its relative os.Args[0] (and
// any relative argument) means what it meant at the start.
func TestUpgradeWithRelativeArgs0AfterChdirChains(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, elsewhere := t.TempDir(), t.TempDir()
	if err := os.Symlink(exe, filepath.Join(dir, "service")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "service"), "-test.run=^$")
	cmd.Args[0] = "./service"
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=upgrade", netEnv+"=tcp 127.0.0.1:0", chdirEnv+"="+elsewhere)
	c := startGeneration(t, cmd)
	pid, addr := c.ready(t)
	pids := []int{pid}
	for range 2 {
		syscall.Kill(pid, syscall.SIGHUP)
		pid, _ = c.ready(t)
		pids = append(pids, pid)
	}
	for i, p := range pids[:2] {
		if got, want := c.next(t, fmt.Sprintf("exit %d:", p)), exitLine(p, pids[i+1]); got != want {
			t.Errorf("generation %d: %q, want %q", i, got, want)
		}
	}
	if got := servingPid(t, addr); got != pid {
		t.Errorf("pid %d serves, want the third generation %d", got, pid)
	}
}
