package shutdown

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

type callbackHandler struct{ on func(slog.Record) }

func (h *callbackHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *callbackHandler) Handle(_ context.Context, r slog.Record) error {
	h.on(r)
	return nil
}

func (h *callbackHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *callbackHandler) WithGroup(string) slog.Handler { return h }

// A logger whose handler calls back into the manager (Add, Trigger,
// Report) does not deadlock: records go out with no lock held, on the log
// goroutine. The hook it adds from a hook's end record is a late Add: it
// runs once, after "second", or, when the record is handled after the last
// hook has ended, is logged and not run.
func TestLogHandlerCallingBackDoesNotDeadlock(t *testing.T) {
	var m *Manager
	var once sync.Once
	var r recorder
	h := &callbackHandler{on: func(rec slog.Record) {
		m.Trigger()
		m.Report()
		if rec.Message == "shutdown: hook finished" {
			once.Do(func() { m.Add("from-log", r.hook("from-log")) })
		}
	}}
	m = New(WithSignals(), WithLogger(slog.New(h)))
	m.Add("first", r.hook("first"))
	m.Add("second", r.hook("second"))
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v", err)
	}
	got := slices.DeleteFunc(r.list(), func(s string) bool { return s == "from-log" })
	if len(got) != 2 || got[0] != "second" || got[1] != "first" {
		t.Errorf("hooks ran %v, want second, then first (and from-log)", r.list())
	}
	if n := len(r.list()) - len(got); n > 1 {
		t.Errorf("from-log ran %d times, want at most once", n)
	}
}

// Focused tests of behaviour the contract names and no other test reaches.

// blockingHandler is a log handler that blocks on records whose message
// contains block, until release is closed: a stuck log pipeline.
type blockingHandler struct {
	slog.Handler
	block   string
	blocked chan struct{} // closed when the first record blocks
	release chan struct{}
}

func (h *blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.block) {
		close(h.blocked)
		<-h.release
	}
	return nil
}

// DESIGN step 7: the second signal's record goes to another goroutine and
// the exit waits for it at most 1s, so a stuck log handler cannot hold the
// process.
func TestSecondSignalExitsDespiteStuckLogHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &blockingHandler{Handler: slog.NewTextHandler(io.Discard, nil), block: "second signal",
			blocked: make(chan struct{}), release: make(chan struct{})}
		m, sigs, exited := newExiting(WithLogger(slog.New(h)))
		release := make(chan struct{})
		entered := make(chan struct{})
		m.Add("stuck", func(ctx context.Context) error { close(entered); <-release; return nil })
		sigs <- syscall.SIGTERM
		<-entered
		start := time.Now()
		sigs <- syscall.SIGTERM
		<-h.blocked
		code := <-exited
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("exit came %v after the second signal, want 1s (the log handler is stuck)", waited)
		}
		if code != 128+15 {
			t.Errorf("exit code = %d, want 143", code)
		}
		close(h.release)
		close(release)
		m.Wait()
	})
}

// DESIGN: without WithLogger, records go to slog.Default() as it is at the
// time of each record, not at New.
func TestDefaultLoggerAtTimeOfRecord(t *testing.T) {
	old := slog.Default()
	t.Cleanup(func() { slog.SetDefault(old) })
	var atNew, later logBuffer
	slog.SetDefault(atNew.logger(slog.LevelInfo))
	m := New(WithSignals())
	slog.SetDefault(later.logger(slog.LevelInfo))
	m.Add("db", func(context.Context) error { return nil })
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if s := later.String(); !strings.Contains(s, "shutdown: started") || !strings.Contains(s, "hook=db") {
		t.Errorf("slog.Default() at the time of the records got:\n%s\nwant the start and the db hook", s)
	}
	if s := atNew.String(); s != "" {
		t.Errorf("slog.Default() at New got records:\n%s", s)
	}
}

// sleepyHandler takes d to handle each record whose message contains
// match, or until release is closed: a log collector that has stalled.
type sleepyHandler struct {
	slog.Handler
	match   string
	d       time.Duration
	release chan struct{}
}

func (h sleepyHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h sleepyHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		select {
		case <-time.After(h.d):
		case <-h.release:
		}
	}
	return nil
}

// A log handler that blocks 5s on every "hook finished" record, with a 1s
// budget, changes no outcome: records go through a goroutine of their own,
// never the one that keeps time, so no hook is reported as timed out or
// skipped, and Wait waits for the records 1s at most after the result is
// ready, never past the budget plus 1s.
func TestStuckLogHandlerChangesNoOutcome(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []HookOption
		hookTime  time.Duration
		wantAfter time.Duration
	}{
		{"budget-bound", nil, 0, time.Second},
		{"with-timeout", []HookOption{Timeout(500 * time.Millisecond)}, 0, time.Second},
		{"near-the-end", nil, 300 * time.Millisecond, 1900 * time.Millisecond}, // 3 hooks: 0.9s, then 1s for the log
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := sleepyHandler{Handler: slog.DiscardHandler, match: "hook finished", d: 5 * time.Second, release: make(chan struct{})}
				defer close(h.release) // the bubble ends once the log goroutine has
				m := New(WithSignals(), WithTimeout(time.Second), WithLogger(slog.New(h)))
				var r recorder
				for _, name := range []string{"c", "b", "a"} {
					m.Add(name, func(context.Context) error { time.Sleep(tc.hookTime); r.add(name); return nil }, tc.opts...)
				}
				start := time.Now()
				m.Trigger()
				if err := m.Wait(); err != nil {
					t.Errorf("Wait() = %v, want nil: a slow log handler changes no outcome", err)
				}
				if d := time.Since(start); d != tc.wantAfter {
					t.Errorf("Wait returned after %v, want %v", d, tc.wantAfter)
				}
				if got := r.list(); !slices.Equal(got, []string{"a", "b", "c"}) {
					t.Errorf("hooks ran %v, want [a b c]", got)
				}
			})
		})
	}
}
