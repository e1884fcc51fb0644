package shutdown

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// A second signal during the drain, with WithForceExit(true), exits at
// once, naming no hook (none has started).
func TestSecondSignalDuringDrainExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, sigs, exited := newExiting(WithLogger(discard), WithDrainDelay(10*time.Second), WithTimeout(20*time.Second))
		var ran atomic.Bool
		m.Add("h", func(context.Context) error { ran.Store(true); return nil })
		start := time.Now()
		sigs <- syscall.SIGTERM
		sigs <- syscall.SIGINT
		if code := <-exited; code != 130 || time.Since(start) != 0 || ran.Load() {
			t.Errorf("exit(%d) after %v (hook ran: %v), want exit(130) at once, before any hook", code, time.Since(start), ran.Load())
		}
		m.Wait() // the exit seam returned: let the shutdown finish
	})
}

// blockedInServe is a user function Run's fn is stuck in.
func blockedInServe(release chan struct{}) { <-release }

// The second signal's record names the hooks and components still
// running, Run's function included, with their stacks: when an AfterRun
// hook waits for a stuck fn, fn is where shutdown is stuck.
func TestSecondSignalLogNamesStuckComponent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m, sigs, exited := newExiting(WithLogger(logs.logger(slog.LevelInfo)))
		m.Add("db", func(context.Context) error { return nil }, AfterRun())
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
		if l := logs.String(); !strings.Contains(l, "running.component=run running.elapsed=2s") || !strings.Contains(l, "blockedInServe") {
			t.Errorf("second signal's log does not name the stuck fn and its stack:\n%s", l)
		}
		close(release)
		<-done
	})
}

// stuckIsError is an error whose Is method blocks until released: user
// code that the manager calls while matching a component's error.
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

// The manager calls user code (errors.Is on a component's error) without
// holding its lock, since the signal goroutine takes that lock before a
// forced exit: a stuck user method must not hold the exit that DESIGN step
// 7 bounds to 1s. Not in a bubble: a goroutine blocked on a mutex is not
// durably blocked. The 10s bound is a hang guard.
func TestForcedExitNotHeldByUserErrorMethods(t *testing.T) {
	m, sigs, exited := newExiting(WithLogger(discard))
	workerErr := &stuckIsError{entered: make(chan struct{}), release: make(chan struct{})}
	// The worker's error is not what started shutdown, so it is matched
	// against the clean-stop errors when the result is built.
	m.Go("worker", func(ctx context.Context) error { <-ctx.Done(); return workerErr })
	sigs <- syscall.SIGTERM
	<-workerErr.entered
	sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
	case <-time.After(10 * time.Second):
		t.Error("second signal did not exit within 10s: the signal goroutine is held by user code")
	}
	close(workerErr.release)
	if err := m.Wait(); !errors.Is(err, workerErr) {
		t.Errorf("Wait() = %v, want the worker's error", err)
	}
}

// A later signal with WithForceExit(false) says it ended the
// drain delay only when one was running; during the hooks it is ignored,
// and says so.
func TestLaterSignalWithoutForceExitIsLogged(t *testing.T) {
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

// A hook that overran its Timeout is abandoned, then returns a little
// later; the next hook is still running when the operator sends a second
// SIGTERM. The forced exit's record lists "the hooks still running" (DESIGN
// step 7): db, not flush, which has returned.
func TestSecondSignalNamesOnlyHooksStillRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m, sigs, exited := newExiting(WithLogger(logs.logger(slog.LevelInfo)), WithTimeout(20*time.Second))
		flushDone, dbDone := make(chan struct{}), make(chan struct{})
		m.Add("db", func(context.Context) error { <-dbDone; return nil })
		m.Add("flush", func(context.Context) error { <-flushDone; return nil }, Timeout(time.Second))
		sigs <- syscall.SIGTERM
		time.Sleep(2 * time.Second) // fake time: flush is abandoned at 1s, db runs
		close(flushDone)            // flush returns, late
		synctest.Wait()
		sigs <- syscall.SIGTERM
		if code := <-exited; code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
		synctest.Wait()
		l := logs.String()
		i := strings.Index(l, "second signal")
		if i < 0 || !strings.Contains(l[i:], "running.hook=db") {
			t.Fatalf("second signal's record does not name db:\n%s", l)
		}
		if strings.Contains(l[i:], "running.hook=flush") {
			t.Errorf("second signal's record names flush, which returned before it:\n%s", l[i:])
		}
		close(dbDone)
		m.Wait()
	})
}
