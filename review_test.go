package shutdown

// Tests from an adversarial review of the core against DESIGN.md. Each one
// either proves a rule nothing else tested, or shows a finding of the review
// (named "finding N" in its comment).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// TriggerCause from a hook is joined, and Trigger from a hook does not
// deadlock: the runner holds no lock while hooks run.
func TestReviewTriggerInsideHook(t *testing.T) {
	m := newTest()
	errReload := errors.New("reload failed")
	m.Add("h", func(context.Context) error {
		m.Trigger()
		m.TriggerCause(errReload)
		return nil
	})
	m.Trigger()
	if err := m.Wait(); !errors.Is(err, errReload) || err.Error() != errReload.Error() {
		t.Errorf("Wait() = %v, want %v alone", err, errReload)
	}
}

// Wait inside a hook blocks until the hook's bound; the hook is abandoned
// and its goroutine ends once shutdown has finished (goleak in TestMain).
func TestReviewWaitInsideHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		m.Add("waits", func(context.Context) error { return m.Wait() }, Timeout(time.Second))
		m.Trigger()
		start := time.Now()
		err := m.Wait()
		if got := time.Since(start); got != time.Second {
			t.Errorf("Wait() returned after %v, want the hook's 1s bound", got)
		}
		if want := `shutdown: hook "waits": timed out after 1s`; err == nil || err.Error() != want {
			t.Errorf("Wait() = %v, want %s", err, want)
		}
	})
}

// panic(nil) is a panic too (runtime.PanicNilError since Go 1.21).
func TestReviewPanicNil(t *testing.T) {
	m := newTest()
	m.Add("nil", func(context.Context) error { panic(nil) })
	m.Trigger()
	err := m.Wait()
	var pe *runtime.PanicNilError
	if !errors.Is(err, ErrPanic) || !errors.As(err, &pe) {
		t.Errorf("Wait() = %v, want ErrPanic with a *runtime.PanicNilError", err)
	}
}

// A logger whose handler calls back into the manager (Add, Trigger,
// Report) does not deadlock: records go out with no lock held. The hook
// it adds from a hook's end record runs, once, as any late Add does. (In a
// batch of plain hooks the worker pops the next hook before it logs the
// end of the last one, so the added hook runs after "first", which counts
// as started: "after the hook now running".)
func TestReviewLoggerCallsBack(t *testing.T) {
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
	got := r.list()
	if i := slices.Index(got, "from-log"); len(got) != 3 || got[0] != "second" || i < 1 {
		t.Errorf("hooks ran %v, want second, then first and from-log", got)
	}
}

type callbackHandler struct{ on func(slog.Record) }

func (h *callbackHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *callbackHandler) Handle(_ context.Context, r slog.Record) error {
	h.on(r)
	return nil
}
func (h *callbackHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *callbackHandler) WithGroup(string) slog.Handler      { return h }

// Run called during the drain delay is an ordinary Run: fn gets a live
// context, and AfterRun hooks wait for it.
func TestReviewRunDuringDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(time.Second))
		var flushAt time.Duration
		start := time.Now()
		m.Add("flush", func(context.Context) error { flushAt = time.Since(start); return nil }, AfterRun())
		m.Trigger()
		err := m.Run(func(ctx context.Context) error {
			if ctx.Err() != nil {
				return errors.New("fn started with a done context during the drain")
			}
			<-ctx.Done()
			time.Sleep(2 * time.Second) // the writer's last work
			return ctx.Err()
		})
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if flushAt != 3*time.Second {
			t.Errorf("AfterRun hook started at %v, want 3s (1s drain + fn's 2s)", flushAt)
		}
	})
}

// fn returning an error that wraps the TriggerCause error does not report
// it twice: the cause is in the result once.
func TestReviewFnWrapsCause(t *testing.T) {
	m := newTest()
	errCause := errors.New("config reload failed")
	go m.TriggerCause(errCause)
	err := m.Run(func(ctx context.Context) error {
		<-ctx.Done()
		return fmt.Errorf("serve: %w", context.Cause(ctx))
	})
	if !errors.Is(err, errCause) || err.Error() != errCause.Error() {
		t.Errorf("Run() = %v, want the cause alone", err)
	}
}

// A second signal during the drain, with WithForceExit(true), exits at
// once, naming no hook (none has started).
func TestReviewSecondSignalDuringDrainExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		exited := make(chan int, 1)
		m := New(seams{notify: captureNotify(got), exit: func(c int) { exited <- c }},
			WithLogger(discard), WithDrainDelay(10*time.Second), WithTimeout(20*time.Second))
		var ran atomic.Bool
		m.Add("h", func(context.Context) error { ran.Store(true); return nil })
		sigs := <-got
		start := time.Now()
		sigs <- syscall.SIGTERM
		sigs <- syscall.SIGINT
		if code := <-exited; code != 130 || time.Since(start) != 0 || ran.Load() {
			t.Errorf("exit(%d) after %v (hook ran: %v), want exit(130) at once, before any hook", code, time.Since(start), ran.Load())
		}
		m.Wait() // the exit seam returned: let the shutdown finish
	})
}

// Adds racing the batch worker's pops: every hook added before the last
// hook ends runs exactly once, and after the hook that was running when it
// was added; every later one is logged, never run.
func TestReviewLateAddsRaceTheWorker(t *testing.T) {
	for range 50 {
		var logs logBuffer
		m := New(WithSignals(), WithLogger(logs.logger(slog.LevelError)))
		var ran sync.Map
		var count atomic.Int32
		for i := range 50 {
			m.Add(fmt.Sprint("h", i), func(context.Context) error { count.Add(1); return nil })
		}
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Go(func() {
				for i := range 20 {
					name := fmt.Sprintf("late-%d-%d", g, i)
					var opts []HookOption
					if i%3 == 0 {
						opts = append(opts, Concurrent("late"))
					}
					m.Add(name, func(context.Context) error {
						if _, dup := ran.LoadOrStore(name, true); dup {
							t.Errorf("%s ran twice", name)
						}
						return nil
					}, opts...)
				}
			})
		}
		m.Trigger()
		wg.Wait()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if count.Load() != 50 {
			t.Errorf("%d of 50 registered hooks ran", count.Load())
		}
		l := logs.String()
		for g := range 2 {
			for i := range 20 {
				name := fmt.Sprintf("late-%d-%d", g, i)
				_, didRun := ran.Load(name)
				logged := strings.Contains(l, "hook="+name+"\n")
				if didRun == logged {
					t.Errorf("%s: ran %v, logged as late %v; want exactly one", name, didRun, logged)
				}
			}
		}
	}
}

// A member added to a running set at the moment its last member ends
// joins the set, runs next as a set of its own, or, once the last hook has
// ended, is logged and not run: never twice, never lost.
func TestReviewJoinAsSetEnds(t *testing.T) {
	for range 200 {
		var logs logBuffer
		m := New(WithSignals(), WithLogger(logs.logger(slog.LevelError)))
		var r recorder
		m.Add("before-set", r.hook("before-set"))
		added := make(chan struct{})
		m.Add("a", func(context.Context) error {
			go func() {
				m.Add("joiner", r.hook("joiner"), Concurrent("s"))
				close(added)
			}()
			return nil
		}, Concurrent("s"))
		m.Trigger()
		<-added
		m.Wait()
		n := len(slices.DeleteFunc(r.list(), func(s string) bool { return s != "joiner" }))
		logged := strings.Contains(logs.String(), "hook=joiner")
		if n > 1 || (n == 1) == logged {
			t.Fatalf("joiner ran %d times, logged as late: %v; want once or logged", n, logged)
		}
	}
}

// Finding 1: a TriggerCause after shutdown has finished cannot be joined
// into the result (every Wait returns the same error), but was logged as if
// it were.
func TestReviewTriggerCauseAfterFinish(t *testing.T) {
	var logs logBuffer
	m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)))
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	m.TriggerCause(errors.New("too late"))
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() after a late TriggerCause = %v, want the same nil as before", err)
	}
	want := `level=ERROR msg="shutdown: TriggerCause after shutdown finished; not in the result" cause="too late"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}

// blockedInServe is a user function Run's fn is stuck in.
func blockedInServe(release chan struct{}) { <-release }

// Finding 2: the second signal's record names the hooks still running, but
// not Run's fn, which DESIGN reports "like a hook (name run)". When an
// AfterRun hook waits for a stuck fn, the record named nothing at all.
func TestReviewSecondSignalNamesStuckRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		exited := make(chan int, 1)
		var logs logBuffer
		m := New(seams{notify: captureNotify(got), exit: func(c int) { exited <- c }}, WithLogger(logs.logger(slog.LevelInfo)))
		m.Add("db", func(context.Context) error { return nil }, AfterRun())
		sigs := <-got
		release, entered := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- m.Run(func(ctx context.Context) error { close(entered); blockedInServe(release); return nil })
		}()
		<-entered
		sigs <- syscall.SIGTERM
		time.Sleep(2 * time.Second) // fake time, to show the elapsed time in the log
		sigs <- syscall.SIGTERM
		if code := <-exited; code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
		if l := logs.String(); !strings.Contains(l, "running.hook=run running.elapsed=2s") || !strings.Contains(l, "blockedInServe") {
			t.Errorf("second signal's log does not name the stuck fn and its stack:\n%s", l)
		}
		close(release)
		<-done
	})
}

type nilCloser struct{}

func (*nilCloser) Close() error { return nil }

// Finding 3: Closer, like GRPCServer, must panic at the call on a nil
// closer, typed nil pointers included, not fail at shutdown.
func TestReviewCloserTypedNilPanics(t *testing.T) {
	wantPanic(t, "shutdown: Closer: c is nil", func() { Closer((*nilCloser)(nil)) })
}

// Finding 4: runtime.Goexit in Run's fn is reported like a hook, as a
// *HookError named "run", not as a bare error.
func TestReviewGoexitInRun(t *testing.T) {
	m := newTest()
	err := m.Run(func(context.Context) error { runtimeGoexit(); return nil })
	var he *HookError
	if !errors.As(err, &he) || he.Name != "run" || !errors.Is(err, errGoexit) {
		t.Errorf("Run() = %v, want a HookError named run wrapping errGoexit", err)
	}
}

// stuckIsError is an error whose Is method blocks until released: user
// code that the manager calls while matching fn's error.
type stuckIsError struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (e *stuckIsError) Error() string { return "stuck in Is" }
func (e *stuckIsError) Is(error) bool {
	e.once.Do(func() { close(e.entered) })
	<-e.release
	return false
}

// Finding 5: the manager called user code (errors.Is on fn's error, the
// cause's Error method) while holding its lock, and the signal goroutine
// takes that lock before a forced exit: a stuck user method held the exit
// that DESIGN step 7 bounds to 1s. Not in a bubble: a goroutine blocked on a
// mutex is not durably blocked. The 10s bound is a hang guard.
func TestReviewForcedExitNotHeldByUserErrorMethods(t *testing.T) {
	got := make(chan chan<- os.Signal, 1)
	exited := make(chan int, 1)
	m := New(seams{notify: captureNotify(got), exit: func(c int) { exited <- c }}, WithLogger(discard))
	sigs := <-got
	fnErr := &stuckIsError{entered: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- m.Run(func(context.Context) error { return fnErr }) }()
	<-fnErr.entered
	sigs <- syscall.SIGTERM // counts as the first: fn started shutdown
	sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
	case <-time.After(10 * time.Second):
		t.Error("second signal did not exit within 10s: the signal goroutine is held by user code")
	}
	close(fnErr.release)
	if err := <-done; !errors.Is(err, fnErr) || err.Error() != fnErr.Error() {
		t.Errorf("Run() = %v, want fn's error", err)
	}
}

// Finding 6: a nil option is a programming error that panics at the call,
// naming the argument, not with a nil dereference.
func TestReviewNilOptionPanics(t *testing.T) {
	nop := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name, want string
		f          func()
	}{
		{"Add", `shutdown: Add("x"): option 1 is nil`, func() { newTest().Add("x", nop, AfterRun(), nil) }},
		{"New", "shutdown: New: option 1 is nil", func() { New(WithSignals(), nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) { wantPanic(t, tc.want, tc.f) })
	}
}

// Finding 7: the budget ends at the very instant a hook returns. The hook
// is reported once, as ok or as timed out, and the hook after it is
// skipped (it used to be started: the timer channel lags the clock),
// whether the hook runs in a batch, with its own Timeout, or in a set.
func TestReviewBudgetEndsAsHookReturns(t *testing.T) {
	for _, opts := range [][]HookOption{nil, {Timeout(time.Hour)}, {Concurrent("s")}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			for range 20 {
				synctest.Test(t, func(t *testing.T) {
					m := newTest(WithTimeout(time.Second))
					m.Add("after", func(context.Context) error { t.Error("hook after the budget ran"); return nil })
					m.Add("edge", func(context.Context) error { time.Sleep(time.Second); return nil }, opts...)
					m.Trigger()
					m.Wait()
					r := m.Report()
					if len(r.Hooks) != 2 {
						t.Fatalf("report has %d rows, want 2:\n%v", len(r.Hooks), r)
					}
					if h := r.Hooks[0]; h.Name != "edge" || (h.Outcome != "ok" && h.Outcome != "timeout") {
						t.Errorf("edge: %+v, want ok or timeout", h)
					}
					if h := r.Hooks[1]; h.Name != "after" || h.Outcome != "skipped" {
						t.Errorf("after: %+v, want skipped", h)
					}
				})
			}
		})
	}
}

// No goroutine outlives a finished shutdown but an abandoned one: the
// signal watcher, the worker, set members, timers and Run's goroutines are
// all gone once Wait has returned (goleak retries while they exit).
func TestReviewNoGoroutineOutlivesWait(t *testing.T) {
	before := goleak.IgnoreCurrent()
	got := make(chan chan<- os.Signal, 1)
	m := New(seams{notify: captureNotify(got)}, WithLogger(discard), WithDrainDelay(time.Millisecond))
	sigs := <-got
	m.Add("flush", func(context.Context) error { return nil }, AfterRun())
	m.Add("a", func(context.Context) error { return nil }, Concurrent("servers"))
	m.Add("b", func(context.Context) error { return nil }, Concurrent("servers"), Timeout(time.Minute))
	m.Add("timed", func(context.Context) error { return nil }, Timeout(time.Minute))
	m.Add("plain", func(context.Context) error { return nil })
	go func() { sigs <- syscall.SIGTERM }()
	if err := m.Run(func(ctx context.Context) error { <-ctx.Done(); return nil }); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	goleak.VerifyNone(t, before)
}

// Finding 8: a later signal with WithForceExit(false) says it ended the
// drain delay only when one was running; during the hooks it is ignored,
// and says so.
func TestReviewLaterSignalLogWithoutForceExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		var logs logBuffer
		m := New(seams{notify: captureNotify(got), exit: func(c int) { t.Errorf("exit(%d) called", c) }},
			WithLogger(logs.logger(slog.LevelInfo)), WithForceExit(false), WithDrainDelay(time.Second))
		entered, release := make(chan struct{}), make(chan struct{})
		m.Add("h", func(context.Context) error { close(entered); <-release; return nil })
		sigs := <-got
		sigs <- syscall.SIGTERM
		sigs <- syscall.SIGINT // during the drain: ends it
		<-entered
		sigs <- syscall.SIGQUIT // during the hooks: ignored
		synctest.Wait()         // the record goes out on a goroutine of its own
		close(release)
		m.Wait()
		l := logs.String()
		for _, want := range []string{
			`level=WARN msg="shutdown: signal received during shutdown; ending the drain delay early" signal=SIGINT`,
			`level=WARN msg="shutdown: signal received during shutdown; ignored" signal=SIGQUIT`,
		} {
			if !strings.Contains(l, want) {
				t.Errorf("log lacks %s:\n%s", want, l)
			}
		}
	})
}

// Judgement call, not changed (report finding 10): DESIGN says a hook
// added after hooks started "runs next ... with its options; one whose
// Concurrent set is running joins it". A member of a set that is pending,
// not running, joins that set instead, and runs when the set's turn comes.
// Remove the Skip to see it fail.
func TestReviewLateAddToPendingSetRunsNext(t *testing.T) {
	t.Skip("finding 10: a late member of a pending set joins it; DESIGN's literal reading runs it next")
	m := newTest()
	var r recorder
	m.Add("set-member", r.hook("set-member"), Concurrent("s"))
	m.Add("middle", r.hook("middle"))
	m.Add("adder", func(context.Context) error {
		m.Add("late-member", r.hook("late-member"), Concurrent("s"))
		return nil
	})
	m.Trigger()
	m.Wait()
	if got := r.list(); len(got) == 0 || got[0] != "late-member" {
		t.Errorf("hooks ran %v, want late-member first (it runs next)", got)
	}
}

// Judgement call, not changed (report finding 11): hooks without Timeout
// share one context whose deadline is the budget's end less min(10% of the
// whole budget, 250ms). DESIGN words the margin as 10% of the hook's own
// bound; a hook that starts within that margin of the end gets a context
// that is already done, so HTTPServer goes straight to Close. Remove the
// Skip to see it fail.
func TestReviewLateHookContextNotDoneAtStart(t *testing.T) {
	t.Skip("finding 11: the shared context's margin is 10% of the budget, not of the hook's bound")
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(time.Second))
		var errAtStart error
		m.Add("late", func(ctx context.Context) error { errAtStart = ctx.Err(); return nil })
		m.Add("slow", func(context.Context) error { time.Sleep(950 * time.Millisecond); return nil })
		m.Trigger()
		m.Wait()
		if errAtStart != nil {
			t.Errorf("hook started 50ms before the budget's end with ctx.Err() = %v, want a live context until 5ms before", errAtStart)
		}
	})
}
