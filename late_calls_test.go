package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
func TestTriggerInsideHookDoesNotDeadlock(t *testing.T) {
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
func TestWaitInsideHookIsAbandonedAtBound(t *testing.T) {
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

// Run called during the drain delay is an ordinary Run: fn gets a live
// context, and AfterRun hooks wait for it.
func TestRunDuringDrainCallsFn(t *testing.T) {
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
func TestRunErrorWrappingCauseIsReportedOnce(t *testing.T) {
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

// Adds racing the runner's pops: every hook added before the last
// hook ends runs exactly once, and after the hook that was running when it
// was added; every later one is logged, never run.
func TestLateAddsRunOnceOrAreLogged(t *testing.T) {
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
		var notRun []string
		for g := range 2 {
			for i := range 20 {
				name := fmt.Sprintf("late-%d-%d", g, i)
				if _, didRun := ran.Load(name); !didRun {
					notRun = append(notRun, "hook="+name+"\n")
				}
			}
		}
		l := logs.waitFor(t, notRun...) // logged after Wait, on the log goroutine
		ran.Range(func(name, _ any) bool {
			if strings.Contains(l, "hook="+name.(string)+"\n") {
				t.Errorf("%s ran and was logged as late", name)
			}
			return true
		})
	}
}

// A member added to a running set at the moment its last member ends
// joins the set, runs next as a set of its own, or, once the last hook has
// ended, is logged and not run: never twice, never lost.
func TestLateSetMemberRunsOnceOrIsLogged(t *testing.T) {
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
		switch {
		case n > 1:
			t.Fatalf("joiner ran %d times, want once or logged", n)
		case n == 0:
			logs.waitFor(t, "hook=joiner")
		case strings.Contains(logs.String(), "hook=joiner"):
			t.Fatalf("joiner ran and was logged as late")
		}
	}
}

// A TriggerCause after shutdown has finished cannot be joined into the
// result (every Wait returns the same error), and its record says so.
func TestTriggerCauseAfterFinishIsOnlyLogged(t *testing.T) {
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
	logs.waitFor(t, `level=ERROR msg="shutdown: TriggerCause after shutdown finished; not in the result" cause="too late"`)
}

// DESIGN "What bad input gets": a late member of a Concurrent set that has
// not started yet joins that set, and runs with it when its turn comes.
func TestLateMemberJoinsPendingSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		var r recorder
		var together sync.WaitGroup // the two members wait for each other
		together.Add(2)
		member := func(name string) Hook {
			return func(context.Context) error { together.Done(); together.Wait(); r.add(name); return nil }
		}
		m.Add("set-member", member("set-member"), Concurrent("s"))
		m.Add("middle", r.hook("middle"))
		m.Add("adder", func(context.Context) error {
			m.Add("late-member", member("late-member"), Concurrent("s"))
			return nil
		})
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if got := r.list(); len(got) != 3 || got[0] != "middle" || !slices.Contains(got[1:], "late-member") {
			t.Errorf("hooks ran %v, want middle, then the set with late-member", got)
		}
	})
}

// DESIGN step 6: hooks bounded by the budget share one margin, min(10% of
// the budget, 250ms), so a hook reached in the budget's last moments still
// starts, with its context already done: an adapter then goes straight to
// its forceful twin (Close, Stop), which is what such a late hook needs.
func TestHookReachedAtBudgetEndStartsWithDoneContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(time.Second))
		ran := false
		var errAtStart error
		m.Add("late", func(ctx context.Context) error { ran, errAtStart = true, ctx.Err(); return nil })
		m.Add("slow", func(context.Context) error { time.Sleep(950 * time.Millisecond); return nil })
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if !ran || errAtStart != context.DeadlineExceeded {
			t.Errorf("late hook ran %v with ctx.Err() = %v at its start, want it run with %v", ran, errAtStart, context.DeadlineExceeded)
		}
	})
}

// No goroutine outlives a finished shutdown but an abandoned one: the
// signal watcher, the log goroutine, set members, timers and Run's goroutines are
// all gone once Wait has returned (goleak retries while they exit).
func TestNoGoroutineOutlivesWait(t *testing.T) {
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
