package shutdown

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// Two Managers in one process (issue 16, item 5): m1 receives SIGTERM,
// and code under m2 hands on m1's cause, context.Cause(m1.Context()), a
// *SignalError, bare or wrapped. That is a clean stop, whoever returns it
// and whoever started m2's shutdown: m2.Wait() returns nil (DESIGN step 8).
// On 2c1f02a the component and Run cases turned a clean SIGTERM into exit
// 1, since another Manager's *SignalError is not m2's cause.
func TestSignalErrorFromAnotherManagerIsCleanStop(t *testing.T) {
	bare := func(err error) error { return err }
	wrapped := func(err error) error { return fmt.Errorf("worker: %w", err) }
	for _, tc := range []struct {
		name string
		// under registers code on m2 that hands on m1's cause once m1's
		// shutdown has started; ownSignal says whether m2 also receives
		// SIGTERM (else that code starts m2's shutdown).
		under     func(m2, m1 *Manager, wrap func(error) error)
		ownSignal bool
	}{
		{"component starts the shutdown", func(m2, m1 *Manager, wrap func(error) error) {
			m2.Go("worker", func(context.Context) error { <-m1.Context().Done(); return wrap(context.Cause(m1.Context())) })
		}, false},
		{"component during the shutdown", func(m2, m1 *Manager, wrap func(error) error) {
			m2.Go("worker", func(ctx context.Context) error {
				<-ctx.Done()
				<-m1.Context().Done()
				return wrap(context.Cause(m1.Context()))
			})
		}, true},
		{"Run's function", func(m2, m1 *Manager, wrap func(error) error) {
			go m2.Run(func(context.Context) error { <-m1.Context().Done(); return wrap(context.Cause(m1.Context())) })
		}, false},
		{"hook", func(m2, m1 *Manager, wrap func(error) error) {
			m2.Add("db", func(context.Context) error { <-m1.Context().Done(); return wrap(context.Cause(m1.Context())) })
		}, true},
		{"TriggerCause", func(m2, m1 *Manager, wrap func(error) error) {
			go func() { <-m1.Context().Done(); m2.TriggerCause(wrap(context.Cause(m1.Context()))) }()
		}, false},
	} {
		for _, wrap := range []struct {
			name string
			f    func(error) error
		}{{"bare", bare}, {"wrapped", wrapped}} {
			t.Run(tc.name+"/"+wrap.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					m1, sigs1, _ := newExiting(WithLogger(discard))
					m2, sigs2, _ := newExiting(WithLogger(discard))
					tc.under(m2, m1, wrap.f)
					sigs1 <- syscall.SIGTERM
					if tc.ownSignal {
						sigs2 <- syscall.SIGTERM
					}
					if err := m1.Wait(); err != nil {
						t.Fatalf("m1.Wait() = %v, want nil", err)
					}
					if err := m2.Wait(); err != nil {
						t.Errorf("m2.Wait() = %v, want nil: another Manager's signal is a clean stop", err)
					}
					if se := (*SignalError)(nil); !errors.As(context.Cause(m2.Context()), &se) || se.ExitCode() != 143 {
						t.Errorf("context.Cause(m2.Context()) = %v, want a *SignalError for SIGTERM", context.Cause(m2.Context()))
					}
				})
			})
		}
	}
}

// A panic stays a panic, whatever its value: a hook that panics with a
// *SignalError is reported as ErrPanic, not taken for a clean stop.
func TestPanicWithSignalErrorIsStillPanic(t *testing.T) {
	m := newTest()
	m.Add("db", func(context.Context) error { panic(&SignalError{Signal: syscall.SIGTERM}) })
	m.Trigger()
	if err := m.Wait(); !errors.Is(err, ErrPanic) {
		t.Errorf("Wait() = %v, want ErrPanic", err)
	}
}

// A hook that returns, after its deadline, a *SignalError joined with that
// deadline (errors.Join(context.Cause(other.Context()), ctx.Err()), say)
// ran to its deadline: it is reported as a timeout, and nothing crashes.
// On main at 4d8f5bb the deadline was matched first, the error then
// cleared, and runHook set the outcome on the nil *HookError that a
// cleared error makes: a nil dereference on the runner's goroutine, which
// crashed the process.
func TestSignalErrorJoinedWithDeadlineIsTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(WithSignals(), WithLogger(discard))
		m.Add("db", func(ctx context.Context) error {
			<-ctx.Done()
			return errors.Join(&SignalError{Signal: syscall.SIGTERM}, ctx.Err())
		}, Timeout(time.Second))
		m.Trigger()
		if err := m.Wait(); !errors.Is(err, ErrTimeout) {
			t.Errorf("Wait() = %v, want ErrTimeout: the hook ran to its deadline", err)
		}
	})
}

// A joined error is a clean stop only when every error in it is one: a
// hook or component that returns errors.Join(err, a *SignalError) still
// reports err, and one that joins only clean stops reports nothing.
func TestJoinedErrorKeepsItsRealError(t *testing.T) {
	flush := errors.New("flush failed")
	sig := &SignalError{Signal: syscall.SIGTERM}
	for _, tc := range []struct {
		name string
		ret  error
		want error // nil: a clean stop
	}{
		{"real error beside a signal", errors.Join(flush, sig), flush},
		{"wrapped signal beside a real error", errors.Join(fmt.Errorf("other: %w", sig), flush), flush},
		{"only signals", errors.Join(sig, fmt.Errorf("again: %w", sig)), nil},
		{"signal beside an upgrade", errors.Join(sig, ErrUpgraded), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(WithSignals(), WithLogger(discard))
			m.Add("db", func(context.Context) error { return tc.ret })
			m.Go("worker", func(ctx context.Context) error { <-ctx.Done(); return tc.ret })
			m.Trigger()
			err := m.Wait()
			if tc.want == nil {
				if err != nil {
					t.Errorf("Wait() = %v, want nil", err)
				}
				return
			}
			var herrs []*HookError
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				if he, ok := e.(*HookError); ok && errors.Is(he, tc.want) {
					herrs = append(herrs, he)
				}
			}
			if len(herrs) != 2 {
				t.Errorf("Wait() = %v, want the hook's and the component's %v", err, tc.want)
			}
		})
	}
}
