// Package bench runs the same shutdown workload four ways: a careful
// hand-rolled loop, github.com/oklog/run, go.uber.org/fx's lifecycle and
// github.com/gracefulgo/shutdown, so that their costs and behaviour can be
// measured side by side. BENCHMARKS.md at the repository root has the
// figures and the command that reproduces them.
//
// Each variant is a [Lib]: Start builds a fresh instance, registers the
// workload's hooks one by one and leaves it waiting for a trigger, the way a
// service is while it serves; trigger then starts shutdown as a signal would,
// and wait blocks until shutdown has finished. Logging is off on every side.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/oklog/run"
	"go.uber.org/fx"
)

// A Hook is one cleanup step, the same function for every library.
type Hook = func(ctx context.Context) error

// DefaultBudget is the total budget when a Workload gives none, the same as
// shutdown.DefaultTimeout.
const DefaultBudget = 25 * time.Second

// Workload is what every variant registers and runs.
type Workload struct {
	Hooks       []Hook        // in registration order
	Concurrent  bool          // the hooks are independent: run them together where the library can
	HookTimeout time.Duration // per-hook bound where the library has one; 0: the budget only
	Budget      time.Duration // total budget (fx: the Stop context's timeout); 0: DefaultBudget
}

func (w Workload) budget() time.Duration {
	if w.Budget > 0 {
		return w.Budget
	}
	return DefaultBudget
}

// A Lib is one way of writing the workload.
type Lib struct {
	Name string
	// Start builds a fresh instance, registers w.Hooks and returns once the
	// instance waits for its trigger. wait may be called once.
	Start func(w Workload) (trigger func(), wait func() error)
}

// Libs lists the variants, the hand-rolled baseline first, so that
// `benchstat -col /lib` prints ratios to it.
var Libs = []Lib{
	{"handrolled", HandRolled},
	{"oklog", Oklog},
	{"fx", Fx},
	{"shutdown", Shutdown},
}

// ErrHookTimeout is what the hand-rolled loop reports for a hook it abandoned.
var ErrHookTimeout = errors.New("bench: hook timed out")

// HandRolled is what a careful person writes without a library: a
// cancellable context standing for signal.NotifyContext, a slice of
// cleanups run last first, each on a goroutine of its own under its own
// deadline (context.WithTimeout of the budget's context), abandoned at that
// deadline through a buffered channel and a select, with panics recovered.
// Independent hooks (w.Concurrent) run all at once, one goroutine each, joined
// by a sync.WaitGroup, with the same per-hook deadline and abandonment.
func HandRolled(w Workload) (trigger func(), wait func() error) {
	ctx, stop := context.WithCancel(context.Background())
	cleanups := append([]Hook(nil), w.Hooks...)
	out := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		close(ready)
		<-ctx.Done()
		out <- runCleanups(cleanups, w)
	}()
	<-ready
	return stop, func() error { return <-out }
}

func runCleanups(cleanups []Hook, w Workload) error {
	budget, cancel := context.WithTimeout(context.Background(), w.budget())
	defer cancel()
	if w.Concurrent {
		errs := make([]error, len(cleanups))
		var wg sync.WaitGroup
		for i, h := range cleanups {
			wg.Go(func() { errs[i] = runOne(budget, h, w.HookTimeout) })
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	var errs []error
	for i := len(cleanups) - 1; i >= 0; i-- {
		if budget.Err() != nil {
			errs = append(errs, fmt.Errorf("hook %d: skipped: %w", i, budget.Err()))
			continue
		}
		if err := runOne(budget, cleanups[i], w.HookTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runOne runs h under its own deadline and abandons it there.
func runOne(budget context.Context, h Hook, timeout time.Duration) error {
	ctx := budget
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(budget, timeout)
		defer cancel()
	}
	done := make(chan error, 1) // buffered: an abandoned hook can still send
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- fmt.Errorf("hook panicked: %v", v)
			}
		}()
		done <- h(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ErrHookTimeout
	}
}

// Oklog writes the workload with github.com/oklog/run. One actor stands for
// the signal handler (run.ContextHandler's shape, plus a ready signal). Each
// hook is an actor whose execute blocks until it is interrupted. oklog/run
// calls the interrupts one after another, in registration order, on Run's
// goroutine, and has no timeouts: a serial hook runs inside its interrupt
// (so in registration order, not last first); an independent hook
// (w.Concurrent) runs in its execute, after the interrupt released it, so all
// of them run at once on their actors' goroutines. Run returns only when
// every actor has returned.
func Oklog(w Workload) (trigger func(), wait func() error) {
	var g run.Group
	ctx, stop := context.WithCancel(context.Background())
	ready := make(chan struct{})
	g.Add(func() error {
		close(ready)
		<-ctx.Done()
		return nil
	}, func(error) { stop() })
	for _, h := range w.Hooks {
		released := make(chan struct{})
		if w.Concurrent {
			g.Add(func() error {
				<-released
				return h(context.Background())
			}, func(error) { close(released) })
			continue
		}
		var err error
		g.Add(func() error {
			<-released
			return err
		}, func(error) {
			err = h(context.Background())
			close(released)
		})
	}
	out := make(chan error, 1)
	go func() { out <- g.Run() }()
	<-ready
	return stop, func() error { return <-out }
}

// Fx writes the workload with go.uber.org/fx: fx.New with fx.NopLogger, one
// fx.Invoke that appends an fx.Hook{OnStop: h} per hook to the
// fx.Lifecycle, app.Start, then, as app.Run does, a goroutine that waits on
// app.Wait() and calls app.Stop with a context bounded by the budget. The
// trigger is fx.Shutdowner's Shutdown. fx runs OnStop hooks one at a time,
// last first, and has no per-hook timeout: Stop's context is the only bound.
// fxtest.NewLifecycle is not used: it logs every hook through a console
// logger that cannot be turned off.
func Fx(w Workload) (trigger func(), wait func() error) {
	var sd fx.Shutdowner
	app := fx.New(
		fx.NopLogger,
		fx.Populate(&sd),
		fx.Invoke(func(lc fx.Lifecycle) {
			for _, h := range w.Hooks {
				lc.Append(fx.Hook{OnStop: h})
			}
		}),
	)
	if err := app.Start(context.Background()); err != nil {
		panic(fmt.Sprintf("bench: fx start: %v", err))
	}
	out := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done := app.Wait()
		close(ready)
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), w.budget())
		defer cancel()
		out <- app.Stop(ctx)
	}()
	<-ready
	return func() {
			if err := sd.Shutdown(); err != nil {
				panic(fmt.Sprintf("bench: fx shutdown: %v", err))
			}
		}, func() error {
			return <-out
		}
}

var discard = slog.New(slog.DiscardHandler)

// Shutdown writes the workload with this library: shutdown.New with no
// signals (Trigger starts it) and a logger that discards, one Add per hook
// (with shutdown.Timeout when the workload has a per-hook bound, and
// shutdown.Concurrent("all") for independent hooks), Trigger, Wait.
func Shutdown(w Workload) (trigger func(), wait func() error) {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(discard), shutdown.WithTimeout(w.budget()))
	var opts []shutdown.HookOption
	if w.HookTimeout > 0 {
		opts = append(opts, shutdown.Timeout(w.HookTimeout))
	}
	if w.Concurrent {
		opts = append(opts, shutdown.Concurrent("all"))
	}
	for _, h := range w.Hooks {
		m.Add("hook", h, opts...)
	}
	return m.Trigger, m.Wait
}
