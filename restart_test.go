package shutdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// servedByManager serves l through m's Handler, with ReadinessHandler at
// /readyz, as a component drained by HTTPServer.
func servedByManager(m *Manager, l net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.Handle("/readyz", m.ReadinessHandler())
	srv := &http.Server{Handler: m.Handler(mux)}
	m.Add("http", HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(l) })
}

// handOver starts m's shutdown as a successful Upgrade does once the new
// process is Ready.
func handOver(m *Manager, pid int) {
	if !m.takeOver() {
		panic("handOver after shutdown started")
	}
	m.begin(&upgradedError{pid}, nil, nil)
}

// The old process of an upgrade: its listener closes at once (new
// connections go to the new process), an open connection is still served,
// with Connection: close, while readiness stays 200; the cause is
// ErrUpgraded, no STOPPING=1 goes to systemd, and Wait returns nil
// although the server's Serve returned net.ErrClosed.
func TestUpgradeHandoffClosesListenerKeepsReadiness(t *testing.T) {
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "n.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", notify.LocalAddr().String())
	m := New(WithSignals(), WithLogger(discard))
	l, err := m.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	servedByManager(m, l)
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	request := func(path string) *http.Response {
		t.Helper()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	request("/") // the connection is open and idle when the upgrade comes

	handOver(m, 42)
	<-m.Stopping()
	for deadline := time.Now().Add(30 * time.Second); ; { // hang guard
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the old process's listener still accepts during the handoff")
		}
	}
	if resp := request("/readyz"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("readiness during the handoff: %d, Connection: close %t; want 200, closed", resp.StatusCode, resp.Close)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if cause := context.Cause(m.Context()); !errors.Is(cause, ErrUpgraded) || cause.Error() != "shutdown: upgraded to pid 42" {
		t.Errorf("cause = %v, want shutdown: upgraded to pid 42, matching ErrUpgraded", cause)
	}
	notify.SetReadDeadline(time.Now())
	if b := make([]byte, 64); true {
		if n, err := notify.Read(b); err == nil {
			t.Errorf("systemd got %q during an upgrade's shutdown, want nothing", b[:n])
		}
	}
}

// TriggerCause with an error wrapping ErrUpgraded never enters the result.
func TestTriggerCauseUpgradedIsNotInResult(t *testing.T) {
	m := New(WithSignals(), WithLogger(discard))
	m.TriggerCause(fmt.Errorf("deploy: %w", ErrUpgraded))
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

func TestUpgradeAfterShutdownStartedFails(t *testing.T) {
	m := New(WithSignals(), WithLogger(discard))
	m.Trigger()
	if err := m.Upgrade(); err == nil || err.Error() != "shutdown: Upgrade: shutdown started already" {
		t.Errorf("Upgrade() = %v, want shutdown: Upgrade: shutdown started already", err)
	}
	m.Wait()
}

// A Unix socket's file survives an upgrade's shutdown and goes with a
// final one; so does the PID file that Ready wrote.
func TestUnixSocketAndPIDFileRemovedOnlyByFinalStop(t *testing.T) {
	dir := t.TempDir()
	sock, pidFile := filepath.Join(dir, "s.sock"), filepath.Join(dir, "pid")
	run := func(upgrade bool) {
		t.Helper()
		m := New(WithSignals(), WithLogger(discard), WithPIDFile(pidFile))
		l, err := m.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		servedByManager(m, l)
		if err := m.Ready(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(pidFile); err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
			t.Errorf("PID file = %q, %v; want this pid", b, err)
		}
		if upgrade {
			handOver(m, 42)
		} else {
			m.Trigger()
		}
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v", err)
		}
	}
	run(true)
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("after an upgrade: %v, want the socket's file kept", err)
	}
	if _, err := os.Stat(pidFile); err != nil {
		t.Errorf("after an upgrade: %v, want the PID file kept", err)
	}
	os.Remove(sock) // this process's listener is closed; a new one binds
	run(false)
	for _, p := range []string{sock, pidFile} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after a final stop: stat %s = %v, want it removed", p, err)
		}
	}
}

func TestListenRejectsOtherNetworks(t *testing.T) {
	m := New(WithSignals(), WithLogger(discard))
	defer m.Release()
	if _, err := m.Listen("udp", "127.0.0.1:0"); err == nil || err.Error() != `shutdown: Listen: network "udp" is not tcp, tcp4, tcp6 or unix` {
		t.Errorf("Listen(udp) = %v", err)
	}
}

func TestFDNameHasNoColon(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"tcp", ":8080"}:           "tcp-_8080",
		{"tcp6", "[::1]:80"}:       "tcp6-[__1]_80",
		{"unix", "/run/a\nb.sock"}: "unix-/run/a_b.sock",
	} {
		if got := fdName(in[0], in[1]); got != want {
			t.Errorf("fdName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
	if got := fdName("unix", string(make([]byte, 400))); len(got) != 255 {
		t.Errorf("fdName of a 400-byte path has %d bytes, want 255", len(got))
	}
}

func TestUpgradeAfterReleaseFails(t *testing.T) {
	m := New(WithSignals(), WithLogger(discard))
	m.Release()
	if err := m.Upgrade(); err == nil || err.Error() != "shutdown: Upgrade: the Manager was released" {
		t.Errorf("Upgrade() = %v, want shutdown: Upgrade: the Manager was released", err)
	}
}

// A PID file that cannot be written is Ready's error; the PID file of a
// directory that does not exist, say.
func TestReadyReportsPIDFileFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "pid")
	m := New(WithSignals(), WithLogger(discard), WithPIDFile(path))
	defer m.Release()
	err := m.Ready()
	if err == nil || !strings.HasPrefix(err.Error(), "shutdown: PID file: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Ready() = %v, want shutdown: PID file: ... not exist", err)
	}
	if again := m.Ready(); again != err {
		t.Errorf("second Ready() = %v, want the first one's %v", again, err)
	}
}
