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

// A hook that, after its context's deadline, returns another Manager's
// *SignalError joined with that deadline (errors.Join(context.Cause(
// other.Context()), ctx.Err()), say) is a clean stop like any other
// *SignalError: Wait returns nil. On main at 4d8f5bb the deadline was
// matched first, the error then cleared, and runHook set the outcome on
// the nil *HookError that a cleared error makes: a nil dereference on the
// runner's goroutine, which crashed the process.
func TestSignalErrorJoinedWithDeadlineIsCleanStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(WithSignals(), WithLogger(discard))
		m.Add("db", func(ctx context.Context) error {
			<-ctx.Done()
			return errors.Join(&SignalError{Signal: syscall.SIGTERM}, ctx.Err())
		}, Timeout(time.Second))
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil: a *SignalError is a clean stop", err)
		}
	})
}
