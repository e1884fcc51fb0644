//go:build unix

package shutdown

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeSystemd is a unixgram socket standing in for systemd's notification
// socket.
type fakeSystemd struct {
	conn *net.UnixConn
	path string
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeSystemd{conn, path}
}

// next returns the next notification and the fds it carried.
func (s *fakeSystemd) next(t *testing.T) (string, []int) {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(time.Minute)) // hang guard
	buf, oob := make([]byte, 4096), make([]byte, 256)
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	var fds []int
	if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			f, _ := syscall.ParseUnixRights(&m)
			fds = append(fds, f...)
		}
	}
	return string(buf[:n]), fds
}

// expect reads notifications until want, failing on a READY=1 or
// STOPPING=1 before it.
func (s *fakeSystemd) expect(t *testing.T, want string) {
	t.Helper()
	for {
		got, _ := s.next(t)
		if got == want {
			return
		}
		if got == "STOPPING=1" || strings.HasPrefix(got, "READY=1") {
			t.Fatalf("systemd got %q before %q", got, want)
		}
	}
}

// A service that systemd-socket-activate started takes its socket from
// LISTEN_FDS (the connection that started it is served), upgrades on
// SIGHUP with systemd told MAINPID= and READY=1 by the old process, and a
// final stop leaves the socket's file, which is systemd's.
func TestSocketActivationUpgradeKeepsSystemdSocket(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		// The README's test command must work on a fresh machine, which
		// lacks it; .ci/restarts.sh installs it, and under CI it must run.
		if os.Getenv("CI") == "" {
			t.Skipf("systemd-socket-activate not found (apt-get install systemd; CI installs it): %v", err)
		}
		t.Fatalf("systemd-socket-activate is needed (apt-get install systemd): %v", err)
	}
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "web.sock")
	notify := newFakeSystemd(t)
	cmd := exec.Command(activate, "-l", sock, "--fdname=web",
		"-E", childEnv+"=upgrade", "-E", netEnv+"=unix "+sock, "-E", notifyEnv+"="+notify.path,
		os.Args[0], "-test.run=^$")
	c := startGeneration(t, cmd)
	// systemd-socket-activate starts the service at the first connection.
	first := dialUntil(t, "unix", sock)
	pid, _ := c.ready(t)
	if got := servedBy(t, first); got != pid {
		t.Errorf("the connection that started the service was served by %d, want %d", got, pid)
	}
	notify.expect(t, "READY=1")

	syscall.Kill(pid, syscall.SIGHUP)
	newPid, _ := c.ready(t)
	if got, want := c.next(t, fmt.Sprintf("exit %d:", pid)), exitLine(pid, newPid); got != want {
		t.Errorf("old process: %q, want %q", got, want)
	}
	notify.expect(t, fmt.Sprintf("MAINPID=%d\nREADY=1", newPid))
	if got := servedBy(t, dialUnix(t, sock)); got != newPid {
		t.Errorf("after the upgrade %d serves, want %d", got, newPid)
	}
	syscall.Kill(newPid, syscall.SIGTERM)
	c.next(t, fmt.Sprintf("exit %d:", newPid))
	notify.expect(t, "STOPPING=1")
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("after the final stop: %v; want systemd's socket file kept", err)
	}
}

// dialUnix opens a connection to a Unix socket.
func dialUnix(t *testing.T, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// servedBy sends a request on conn and returns the pid that answered.
func servedBy(t *testing.T, conn net.Conn) int {
	t.Helper()
	conn.SetDeadline(time.Now().Add(time.Minute)) // hang guard
	if _, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	defer resp.Body.Close()
	var pid int
	fmt.Fscan(resp.Body, &pid)
	return pid
}

// With $FDSTORE, a socket Listen bound goes to systemd's fd store, named
// without ':'. A new instance started on it with LISTEN_FDS, after the
// first one has exited, serves the connections made while no process ran,
// and asks systemd to drop a stored socket no Listen claimed.
func TestFDStoreKeepsSocketAcrossStopAndStart(t *testing.T) {
	t.Parallel()
	notify := newFakeSystemd(t)
	c, pid, addr := startUpgradeChild(t, notifyEnv+"="+notify.path, "FDSTORE=4")
	state, fds := notify.next(t)
	if want := "FDSTORE=1\nFDNAME=tcp-127.0.0.1_0"; state != want || len(fds) != 1 {
		t.Fatalf("systemd got %q with %d fds, want %q with 1", state, len(fds), want)
	}
	stored := os.NewFile(uintptr(fds[0]), "stored")
	defer stored.Close()
	sa, err := syscall.Getsockname(fds[0])
	if in4, ok := sa.(*syscall.SockaddrInet4); err != nil || !ok || net.JoinHostPort(net.IP(in4.Addr[:]).String(), strconv.Itoa(in4.Port)) != addr {
		t.Fatalf("stored socket's address is %v (%v), want %s", sa, err, addr)
	}
	notify.expect(t, "READY=1")
	c.kill(t, syscall.SIGTERM)
	c.next(t, fmt.Sprintf("exit %d:", pid))
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("first instance exited %d", code)
	}
	notify.expect(t, "STOPPING=1")

	// No process serves now: these connections wait in the stored socket.
	var queued []net.Conn
	for range 10 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection refused while no process ran: %v", err)
		}
		defer conn.Close()
		queued = append(queued, conn)
	}
	spare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	spareFile, _ := spare.(*net.TCPListener).File()
	defer spareFile.Close()
	second := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	second.Env = append(os.Environ(), childEnv+"=upgrade", netEnv+"=tcp 127.0.0.1:0", notifyEnv+"="+notify.path, "FDSTORE=4",
		"LISTEN_FDS=2", "LISTEN_FDNAMES=tcp-127.0.0.1_0:spare")
	second.ExtraFiles = []*os.File{stored, spareFile}
	c2 := startGeneration(t, second)
	pid2, addr2 := c2.ready(t)
	if addr2 != addr {
		t.Errorf("second instance listens on %s, want the stored %s", addr2, addr)
	}
	notify.expect(t, "FDSTOREREMOVE=1\nFDNAME=spare")
	for i, conn := range queued {
		if got := servedBy(t, conn); got != pid2 {
			t.Errorf("queued connection %d served by %d, want %d", i, got, pid2)
		}
	}
}
