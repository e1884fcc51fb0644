package shutdown

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// panic(nil) is a panic too (runtime.PanicNilError since Go 1.21).
func TestPanicNilIsReported(t *testing.T) {
	m := newTest()
	m.Add("nil", func(context.Context) error { panic(nil) })
	m.Trigger()
	err := m.Wait()
	var pe *runtime.PanicNilError
	if !errors.Is(err, ErrPanic) || !errors.As(err, &pe) {
		t.Errorf("Wait() = %v, want ErrPanic with a *runtime.PanicNilError", err)
	}
}

type nilCloser struct{}

func (*nilCloser) Close() error { return nil }

// Closer, like GRPCServer, must panic at the call on a nil
// closer, typed nil pointers included, not fail at shutdown.
func TestCloserTypedNilPanics(t *testing.T) {
	wantPanic(t, "shutdown: Closer: c is nil", func() { Closer((*nilCloser)(nil)) })
}

// runtime.Goexit in Run's fn is reported like a hook, as a
// *HookError named "run", not as a bare error.
func TestGoexitInRunIsReported(t *testing.T) {
	m := newTest()
	err := m.Run(func(context.Context) error { runtimeGoexit(); return nil })
	var he *HookError
	if !errors.As(err, &he) || he.Name != "run" || !errors.Is(err, errGoexit) {
		t.Errorf("Run() = %v, want a HookError named run wrapping errGoexit", err)
	}
}

// A nil option is a programming error that panics at the call,
// naming the argument, not with a nil dereference.
func TestNilOptionPanics(t *testing.T) {
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

// The budget ends at the very instant a hook returns. The hook is reported
// once, as ok or as timed out, and the hook after it is skipped, not
// started (a timer's channel may lag the clock), whether the hook has its
// own Timeout, is in a set, or neither.
func TestBudgetEndingAsHookReturnsSkipsTheNext(t *testing.T) {
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

// queueError is a worker's error type whose Error dereferences its
// receiver, as most pointer error types do.
type queueError struct{ queue string }

func (e *queueError) Error() string { return "queue " + e.queue + " closed" }

// A component returns a typed nil error (the classic `var err *queueError;
// return err`). Printing it with fmt or slog's text handler recovers the
// panic of its Error method; the Manager must not crash the process on it
// either: it is the user's value, and the hooks still have to run.
func TestComponentErrorWhoseErrorMethodPanicsDoesNotCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		ran := false
		m.Add("db", func(context.Context) error { ran = true; return nil })
		m.Go("worker", func(context.Context) error {
			var err *queueError
			return err
		})
		err := m.Wait()
		var he *HookError
		if !errors.As(err, &he) || he.Name != "worker" {
			t.Errorf("Wait() = %v, want the worker's HookError", err)
		}
		if !ran {
			t.Errorf("hook db did not run")
		}
	})
}

// wrapError's Unwrap dereferences its receiver: a typed nil panics there.
type wrapError struct{ err error }

func (e *wrapError) Error() string { return "wrapped" }
func (e *wrapError) Unwrap() error { return e.err }

// Matching an error against the clean-stop rules (a *SignalError from any
// Manager) walks its chain through the user's Unwrap methods, on the
// component's or hook's own goroutine: one that panics is no match, not a
// crash, and the error is reported as it is.
func TestErrorWhoseUnwrapPanicsIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		m.Add("db", func(context.Context) error { var err *wrapError; return err })
		m.Go("worker", func(context.Context) error { var err *wrapError; return err })
		err := m.Wait()
		var he *HookError
		if !errors.As(err, &he) || strings.Count(err.Error(), "shutdown: ") != 2 {
			t.Errorf("Wait() = %v, want the worker's and db's HookErrors", err)
		}
	})
}
