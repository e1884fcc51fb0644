//go:build unix

package shutdown

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A new process whose start fails after Listen, with a shutdown of its
// own before Ready, leaves the Unix socket's file to the old process,
// which still serves on it; the next upgrade succeeds.
func TestFailedNewProcessKeepsOldProcessUnixSocketFile(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "s.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=upgrade", netEnv+"=unix "+sock)
	c := startGeneration(t, cmd)
	old, _ := c.ready(t)
	c.command(t, "upgrade stop")
	if got, want := c.next(t, "upgrade "), "exited before Ready: exit status 3"; !strings.Contains(got, want) {
		t.Errorf("Upgrade: %q, want an error with %q", got, want)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("after the failed upgrade: %v; want the old process's socket file kept", err)
	}
	if got := servedBy(t, dialUnix(t, sock)); got != old {
		t.Errorf("after the failed upgrade pid %d serves, want the old %d", got, old)
	}
	c.command(t, "upgrade ok")
	newPid, _ := c.ready(t)
	if got := c.next(t, "exit "); got != exitLine(old, newPid) {
		t.Errorf("old process after the next upgrade: %q", got)
	}
}

// A new process whose start fails after Listen, with a shutdown of its
// own before Ready, tells systemd nothing: the service is not stopping,
// the old process serves on, and it alone speaks for the service.
func TestFailedNewProcessSendsNoStopping(t *testing.T) {
	t.Parallel()
	notify := newFakeSystemd(t)
	c, old, _ := startUpgradeChild(t, notifyEnv+"="+notify.path)
	notify.expect(t, "READY=1")
	c.command(t, "upgrade stop")
	if got, want := c.next(t, "upgrade "), "exited before Ready: exit status 3"; !strings.Contains(got, want) {
		t.Errorf("Upgrade: %q, want an error with %q", got, want)
	}
	c.command(t, "upgrade ok")
	newPid, _ := c.ready(t)
	notify.expect(t, fmt.Sprintf("MAINPID=%d\nREADY=1", newPid))
	if got := c.next(t, "exit "); got != exitLine(old, newPid) {
		t.Errorf("old process after the next upgrade: %q", got)
	}
}

// A new process whose shutdown started before it called Ready (a
// component that failed at once) does not tell the old process it is
// Ready: the old one would hand over to a process that is going away, and
// nothing would serve. Upgrade fails, and the old process serves on.
func TestNewProcessReadyAfterItsShutdownStartedKeepsOldServing(t *testing.T) {
	t.Parallel()
	c, old, addr := startUpgradeChild(t)
	c.command(t, "upgrade stopready")
	if got, want := c.next(t, "late ready: "), "late ready: shutdown: Ready: shutdown started already"; got != want {
		t.Errorf("the new process's Ready: %q, want %q", got, want)
	}
	if got, want := c.next(t, "upgrade "), "exited before Ready: exit status 3"; !strings.Contains(got, want) {
		t.Errorf("Upgrade: %q, want an error with %q", got, want)
	}
	if got := servingPid(t, addr); got != old {
		t.Errorf("after the failed upgrade pid %d serves, want the old %d", got, old)
	}
}
