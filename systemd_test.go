package shutdown

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSystemdStopping(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{filepath.Join(dir, "notify.sock"), "@shutdown-test-" + filepath.Base(dir)} {
		t.Run(name, func(t *testing.T) {
			addr := name
			if addr[0] == '@' {
				if !abstractSockets {
					t.Skip("abstract sockets are Linux only")
				}
				addr = "\x00" + addr[1:]
			}
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err != nil {
				t.Skipf("no unixgram sockets here: %v", err)
			}
			defer conn.Close()
			t.Setenv("NOTIFY_SOCKET", name)
			m := newTest()
			m.Trigger()
			buf := make([]byte, 64)
			conn.SetReadDeadline(time.Now().Add(time.Minute)) // hang guard
			n, err := conn.Read(buf)
			if err != nil || string(buf[:n]) != "STOPPING=1" {
				t.Errorf("datagram = %q, %v; want STOPPING=1", buf[:n], err)
			}
			m.Wait()
		})
	}
}

func TestSystemdNotifyFailureIsLogged(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
	var logs logBuffer
	m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)))
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v: a missing systemd socket must not fail shutdown", err)
	}
	if l := logs.String(); !strings.Contains(l, "systemd notification failed") {
		t.Errorf("log lacks the failed notification:\n%s", l)
	}
}

// A full systemd notification socket (a stalled systemd) never blocks the
// shutdown: the write gives up within milliseconds and is logged, and the
// hooks run within their 1s budget.
func TestSystemdFullSocketDoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	conn, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatalf("unixgram socket: %v", err)
	}
	defer conn.Close()
	fill, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fill.Close()
	full := false
	for range 100000 { // the receiver never reads: its queue fills up
		fill.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := fill.Write(make([]byte, 512)); err != nil {
			full = true
			break
		}
	}
	if !full {
		t.Fatal("could not fill the socket's queue")
	}
	t.Setenv("NOTIFY_SOCKET", path)
	var logs logBuffer
	m := New(WithSignals(), WithTimeout(time.Second), WithLogger(logs.logger(slog.LevelInfo)))
	ran := false
	m.Add("hook", func(context.Context) error { ran = true; return nil })
	m.Trigger()
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("shutdown still running after 30s: blocked on the full socket")
	}
	if err := m.Wait(); err != nil || !ran {
		t.Errorf("Wait() = %v, hook ran %v; want nil and run", err, ran)
	}
	logs.waitFor(t, "systemd notification failed")
}
