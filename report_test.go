package shutdown

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// blockedInFlushToDisk is a user function that never finishes; its name must
// appear in the stack the manager reports.
func blockedInFlushToDisk(release chan struct{}) { <-release }

// blockedInCloseDatabase is another, for Run's fn.
func blockedInCloseDatabase(release chan struct{}) { <-release }

func TestStuckHookStackNamesItsFunction(t *testing.T) {
	cases := []struct {
		name string
		opts []HookOption
	}{
		{"budget-bound", nil},
		{"own-timeout", []HookOption{Timeout(time.Second)}},
		{"set-member", []HookOption{Concurrent("s"), Timeout(time.Second)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				defer close(release)
				var logs logBuffer
				m := New(WithSignals(), WithTimeout(2*time.Second), WithLogger(logs.logger(slog.LevelInfo)))
				m.Add("flush", func(ctx context.Context) error {
					blockedInFlushToDisk(release)
					return nil
				}, tc.opts...)
				m.Trigger()
				err := m.Wait()
				var he *HookError
				if !errors.As(err, &he) || !errors.Is(err, ErrTimeout) {
					t.Fatalf("Wait() = %v, want a timed-out HookError", err)
				}
				if !strings.Contains(string(he.Stack), "shutdown.blockedInFlushToDisk") || !strings.Contains(string(he.Stack), "report_test.go:") {
					t.Errorf("Stack does not name the blocking function:\n%s", he.Stack)
				}
				if strings.Contains(string(he.Stack), "shutdown.(*runner)") {
					t.Errorf("Stack shows the library's own frames below the hook:\n%s", he.Stack)
				}
				if l := logs.String(); !strings.Contains(l, "outcome=timeout") || !strings.Contains(l, "blockedInFlushToDisk") {
					t.Errorf("log lacks the stack:\n%s", l)
				}
			})
		})
	}
}

func TestStuckRunStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(time.Second))
		// Trigger from fn: a Trigger before Run could start the hooks first,
		// and Run would then not call fn at all.
		err := m.Run(func(ctx context.Context) error { m.Trigger(); blockedInCloseDatabase(release); return nil })
		var he *HookError
		if !errors.As(err, &he) || he.Name != "run" || !strings.Contains(string(he.Stack), "blockedInCloseDatabase") {
			t.Errorf("Run() = %v with stack\n%s\nwant run's stack naming blockedInCloseDatabase", err, he.Stack)
		}
	})
}

func TestStackCapturesAreCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(time.Second))
		for range maxCaptures + 2 {
			m.Add("stuck", func(context.Context) error { <-release; return nil }, Concurrent("all"))
		}
		m.Trigger()
		err := m.Wait()
		with := 0
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if len(e.(*HookError).Stack) > 0 {
				with++
			}
		}
		if with != maxCaptures {
			t.Errorf("%d abandoned hooks have stacks, want the cap, %d", with, maxCaptures)
		}
	})
}

func TestSecondSignalLogsStacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		exited := make(chan int, 1)
		var logs logBuffer
		m := New(seams{notify: captureNotify(got), exit: func(c int) { exited <- c }}, WithLogger(logs.logger(slog.LevelInfo)))
		release, entered := make(chan struct{}), make(chan struct{})
		m.Add("flush", func(ctx context.Context) error { close(entered); blockedInFlushToDisk(release); return nil })
		sigs := <-got
		sigs <- syscall.SIGTERM
		<-entered
		sigs <- syscall.SIGTERM
		if code := <-exited; code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
		if l := logs.String(); !strings.Contains(l, "running.hook=flush") || !strings.Contains(l, "blockedInFlushToDisk") || !strings.Contains(l, "code=143") {
			t.Errorf("second signal's log lacks the running hook's stack:\n%s", l)
		}
		close(release)
		m.Wait()
	})
}

func TestReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(10*time.Second), WithDrainDelay(time.Second))
		if m.Report() != nil {
			t.Error("Report() before shutdown is not nil")
		}
		m.Add("skipped", func(context.Context) error { return nil })
		m.Add("stuck", func(context.Context) error { <-release; return nil })
		m.Add("panics", func(context.Context) error { panic("boom") })
		m.Add("fails", func(context.Context) error { return errors.New("disk full") })
		m.Add("a", func(context.Context) error { time.Sleep(2 * time.Second); return nil }, Concurrent("servers"))
		m.Add("b", func(context.Context) error { time.Sleep(3 * time.Second); return nil }, Concurrent("servers"))
		m.Add("ok", func(context.Context) error { time.Sleep(500 * time.Millisecond); return nil })
		m.Trigger()
		m.Wait()
		r := m.Report()
		if r == nil || r != m.Report() {
			t.Fatal("Report() after Wait is nil or differs between calls")
		}
		if r.Cause != "shutdown: triggered" || r.Budget != 10*time.Second || r.Drain != time.Second || r.Elapsed != 10*time.Second {
			t.Errorf("Report = %+v, want cause, 10s budget, 1s drain, 10s elapsed", r)
		}
		type row struct {
			name, set     string
			start, length time.Duration
			outcome       string
		}
		want := []row{
			{"ok", "", 1 * time.Second, 500 * time.Millisecond, "ok"},
			{"a", "servers", 1500 * time.Millisecond, 2 * time.Second, "ok"},
			{"b", "servers", 1500 * time.Millisecond, 3 * time.Second, "ok"},
			{"fails", "", 4500 * time.Millisecond, 0, "failed"},
			{"panics", "", 4500 * time.Millisecond, 0, "panic"},
			{"stuck", "", 4500 * time.Millisecond, 5500 * time.Millisecond, "timeout"},
			{"skipped", "", 10 * time.Second, 0, "skipped"},
		}
		if len(r.Hooks) != len(want) {
			t.Fatalf("Report has %d hooks, want %d:\n%v", len(r.Hooks), len(want), r)
		}
		for i, w := range want {
			h := r.Hooks[i]
			got := row{h.Name, h.Set, h.Start, h.Elapsed, h.Outcome}
			if h.Name == "a" || h.Name == "b" { // the set's members end in any order
				got, w = row{h.Name, h.Set, h.Start, 0, h.Outcome}, row{h.Name, "servers", w.start, 0, "ok"}
			}
			if got != w {
				t.Errorf("Hooks[%d] = %+v, want %+v", i, got, w)
			}
			if (h.Outcome == "ok") != (h.Err == nil) {
				t.Errorf("Hooks[%d] outcome %s with Err %v", i, h.Outcome, h.Err)
			}
		}
		s := r.String()
		for _, want := range []string{
			"shutdown: triggered: 10s of the 10s budget\n",
			"drain     |====                                    |      0s +1s\n",
			"servers/b |      ============                      |    1.5s +3s      ok\n",
			"stuck     |                  xxxxxxxxxxxxxxxxxxxxxx|    4.5s +5.5s    timeout\n",
			"skipped   |                                       -|     10s +0s      skipped\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("timeline lacks %q:\n%s", want, s)
			}
		}
	})
}

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
