// Package shutdown runs a service's cleanup hooks, in reverse order and
// within one time budget, when the process receives SIGTERM or SIGINT, so
// that it exits cleanly before the supervisor's SIGKILL arrives.
//
// It is like [signal.NotifyContext] plus an ordered list of cleanups and a
// group of long-lived components: a [Manager] installs the signal handler in
// [New], services start their servers and workers with [Manager.Go] (or wrap
// main with [Manager.Run]), register hooks with [Manager.Add], and call
// [Manager.Wait]. The sequence is:
//
//  1. A signal, [Manager.Trigger], or a component returning starts it;
//     [Manager.Stopping] is closed and [Manager.ReadinessHandler] answers 503.
//  2. For [WithDrainDelay] the service keeps serving, so load balancers
//     stop sending new connections before listeners close;
//     [WithAdaptiveDrain] ends that drain once the requests have moved.
//  3. [Manager.Context] is cancelled with the cause; components stop.
//  4. Hooks run last added first, one at a time ([Concurrent] sets run
//     together), each bounded by its [Timeout] and by the budget
//     ([WithTimeout]); a hook still running at its bound is abandoned.
//  5. [Manager.Wait] returns, once every component has returned or been
//     abandoned at the end of the budget, one error that names every hook
//     and component that failed, timed out, panicked or was skipped.
//
// A second signal during shutdown exits at once with code 128+n (see
// [WithForceExit]). The README has a picture of the sequence and a guide to
// Kubernetes: https://github.com/gracefulgo/shutdown#readme.
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"
)

// state is where a Manager is in its life. It only moves forward.
type state int

const (
	idle     state = iota // serving; no shutdown yet
	draining              // shutdown started; drain delay running
	hooking               // hooks running
	finished              // the last hook has ended
	released              // Release ended the Manager before any shutdown
)

func (s state) String() string {
	return [...]string{"idle", "the drain delay", "the hooks' start", "the last hook ended", "Release"}[s]
}

// A Manager coordinates one process's shutdown: it listens for signals,
// runs the components, holds the hooks and runs the shutdown sequence once.
// All its methods are safe for concurrent use. Create a Manager with [New];
// the zero value is not usable, because the signal handler must be
// installed before the first signal can arrive.
type Manager struct {
	cfg      config
	sigCh    chan os.Signal // nil when no signals are configured
	quit     chan struct{}  // closed by Release: the signal goroutine ends
	quitOnce sync.Once
	sigDone  chan struct{} // closed when the signal goroutine has ended
	stopping chan struct{} // closed at step 1
	drainCut chan struct{} // closed by a later signal with WithForceExit(false)
	cutOnce  sync.Once
	done     chan struct{} // closed when shutdown has finished, or by Release
	ctx      context.Context
	cancel   context.CancelCauseFunc
	logs     logQueue
	err      error   // the result; written before done is closed
	report   *Report // likewise

	mu          sync.Mutex
	state       state
	start       time.Time    // of the shutdown
	cause       error        // what started it
	causeText   string       // cause.Error(), for the report
	skipDrain   bool         // a component started it and no other was running
	byComponent bool         // a component started it
	cutByComps  bool         // drainCut closed: no component left to serve (component.go)
	triggered   []error      // TriggerCause errors, for the result
	sealed      bool         // the result is built: a TriggerCause now is too late for it
	ranRun      bool         // Run was called
	comps       []*component // in the order Go started them
	steps       []any        // pending hooks: an entry or a *hookSet each; the last runs next
	live        *hookSet     // the Concurrent set now running, if any
	running     []*task      // hooks started and not returned, for the second signal's record
	rows        []HookReport // hooks, as they ended
	hookErrs    []error

	rs restarts  // Listen, Ready, Upgrade (restart.go)
	ev *evidence // requests through Handler, for WithAdaptiveDrain; nil without it
}

// New returns a Manager configured by opts and installs its signal handler at
// once, as [signal.NotifyContext] does, so a signal that arrives before
// [Manager.Wait] or [Manager.Run] is called still starts an orderly shutdown.
// [Manager.Release] releases it if it is never used. New panics if an option is
// nil or an explicit drain delay is not shorter than the budget.
func New(opts ...Option) *Manager {
	cfg := config{
		signals:        defaultSignals,
		timeout:        DefaultTimeout,
		forceExit:      true,
		notify:         signal.Notify,
		upgradeTimeout: DefaultUpgradeTimeout,
		exit:           os.Exit,
	}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("shutdown: New: option %d is nil", i))
		}
		o.apply(&cfg)
	}
	checkUpgradeSignal(&cfg)
	cfg.checkAdaptive()
	if cfg.drainSet && cfg.drain >= cfg.timeout {
		if g := cfg.grace; g != nil {
			panic(fmt.Sprintf("shutdown: WithDrainDelay(%v) does not fit %v: its budget is %v", cfg.drain, g, cfg.timeout))
		}
		panic(fmt.Sprintf("shutdown: WithDrainDelay(%v) is not shorter than WithTimeout(%v)", cfg.drain, cfg.timeout))
	}
	if !cfg.drainSet && os.Getenv("KUBERNETES_SERVICE_HOST") != "" && (cfg.grace == nil || cfg.grace.preStop == 0) {
		cfg.drain = min(5*time.Second, cfg.timeout/5)
	}
	m := &Manager{
		cfg:      cfg,
		quit:     make(chan struct{}),
		sigDone:  make(chan struct{}),
		stopping: make(chan struct{}),
		drainCut: make(chan struct{}),
		done:     make(chan struct{}),
		ev:       newEvidence(&cfg),
	}
	m.ctx, m.cancel = context.WithCancelCause(context.Background())
	if len(cfg.signals) > 0 {
		m.sigCh = make(chan os.Signal, 1)
		cfg.notify(m.sigCh, cfg.signals...)
		go m.watchSignals()
	} else {
		close(m.sigDone)
	}
	watchUpgradeSignal(m)
	return m
}

// Trigger starts shutdown now, as a signal would. It is idempotent: calls
// after the first do nothing. When Trigger returns, [Manager.Stopping] is
// closed. It does not wait for shutdown to finish; use [Manager.Wait].
// After [Manager.Release] it only logs.
func (m *Manager) Trigger() { m.TriggerCause(nil) }

// TriggerCause is [Manager.Trigger] with a reason: err becomes the cause of
// [Manager.Context] and is joined into the error that [Manager.Wait] and
// [Manager.Run] return (a [*SignalError] never is). TriggerCause(nil) is
// Trigger, whose cause is "shutdown: triggered". After shutdown has started,
// the cause does not change; err is logged and joined into the result,
// unless the result is built already: then it is only logged.
func (m *Manager) TriggerCause(err error) {
	var cause, joined error = errTriggered, err
	if err != nil {
		cause = err
		if cleanStop(err) {
			joined = nil // a signal or an upgrade is how a clean shutdown starts
		}
	}
	if m.begin(cause, joined, nil) {
		return
	}
	m.mu.Lock()
	st, sealed := m.state, m.sealed
	if joined != nil && !sealed && st != released {
		m.triggered = append(m.triggered, joined)
	}
	m.mu.Unlock()
	switch {
	case st == released:
		m.log(slog.LevelError, "shutdown: Trigger after Release; ignored", slog.Any("cause", cause))
	case err == nil:
	case sealed:
		// Wait returns the same error to every caller: one that may have
		// returned already cannot change.
		m.log(slog.LevelError, "shutdown: TriggerCause after shutdown finished; not in the result", slog.Any("cause", err))
	default:
		m.log(slog.LevelError, "shutdown: TriggerCause after shutdown started", slog.Any("cause", err))
	}
}

// begin starts shutdown once; it reports whether this call started it.
// joined is the error to join into the result, if any; by is the
// component whose return starts it, or nil. It formats cause, user code
// for a TriggerCause error, on the caller's goroutine, with no lock held;
// fmt recovers a panicking Error method (a typed nil pointer, say).
func (m *Manager) begin(cause, joined error, by *component) bool {
	text := fmt.Sprint(cause)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != idle {
		return false
	}
	m.state, m.cause, m.causeText, m.start = draining, cause, text, time.Now()
	if by != nil {
		m.byComponent = true
		m.skipDrain = m.componentsRunning() == 1 // by itself, not yet marked: no other serves
	} else if joined != nil {
		m.triggered = append(m.triggered, joined)
	}
	close(m.stopping)
	go m.sequence()
	return true
}

// Release stops catching signals, like [signal.Stop]: once it returns, no
// signal reaches the Manager, and a signal gets its default action again
// once nothing else in the process catches it. It is idempotent.
//
// Before a shutdown has started, Release also ends the Manager: [Manager.Done]
// is closed, [Manager.Wait] and [Manager.Run] return nil (Run without
// calling its function), [Manager.Context] is cancelled with the cause
// "shutdown: released", no hook runs, and a later Trigger, Add or Go only
// logs; [Manager.Stopping] stays open. Components already running are not
// waited for, and their errors are dropped: Release is for a Manager that
// will not be used, such as one that a failed constructor made. After a
// shutdown has started, Release only stops catching signals (so a second
// signal no longer forces an exit) and the shutdown runs on.
//
// To stop a service and run its hooks, call [Manager.Trigger]. Release is
// named like [os.Process.Release]; it was once Stop, which newcomers read as
// "stop the service" (grpc's Stop, fx's app.Stop) and so lost every hook.
func (m *Manager) Release() {
	m.quitOnce.Do(func() {
		if m.sigCh != nil {
			signal.Stop(m.sigCh)
		}
		close(m.quit)
	})
	<-m.sigDone // a signal read before Release is handled before it returns
	m.mu.Lock()
	if m.state != idle {
		m.mu.Unlock()
		return
	}
	m.state = released
	m.mu.Unlock()
	m.cancel(errReleased)
	close(m.done)
}

// Stopping returns a channel that is closed when shutdown starts (step 1),
// before the drain delay: from then on [Manager.ReadinessHandler] answers 503.
// It is closed before [Manager.Trigger] returns.
func (m *Manager) Stopping() <-chan struct{} { return m.stopping }

// Context returns a context for components and background work, cancelled
// when the drain delay has ended (step 3 in the package doc), with the
// shutdown's cause: [context.Cause] is a [*SignalError] ("shutdown:
// received SIGTERM"), the error given to [Manager.TriggerCause], or says
// which component returned. Streaming handlers (WebSockets, server-sent
// events) end their streams when it is done. Do not use it as an
// http.Server's BaseContext: requests in flight would be cancelled before
// the server has drained them.
func (m *Manager) Context() context.Context { return m.ctx }

// Done returns a channel that is closed when shutdown has finished: every
// hook has ended or been abandoned, every component has returned or been
// abandoned, and the result is ready. [Manager.Release] closes it too.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Wait blocks until shutdown has finished and returns its result, the same
// error to every caller: [errors.Join] of the [Manager.TriggerCause] errors
// and a [*HookError] for each hook, component or Run function that failed,
// timed out, panicked or was skipped. The error of the component that
// started shutdown by returning always enters; another component's error
// does not when it is (by [errors.Is]) [context.Canceled],
// [http.ErrServerClosed] or the shutdown's cause, nor, in an upgrade's
// shutdown, when it is [net.ErrClosed] (its listener handed over). A
// [*SignalError], this Manager's or another's, wrapped or not, and an
// error wrapping [ErrUpgraded] never enter, whoever returns them.
// A clean shutdown, signal-triggered or not, returns nil. Wait does not
// start shutdown.
//
// Wait returns within the budget plus a small overhead, whatever the hooks,
// components and log handler do (see [WithTimeout]).
func (m *Manager) Wait() error {
	<-m.done
	return m.err
}

// sequence runs DESIGN steps 2 to 8 on a goroutine of its own, the one that
// keeps time: it calls no user code but through goroutines it can abandon.
func (m *Manager) sequence() {
	m.mu.Lock()
	start, cause, skipDrain := m.start, m.cause, m.skipDrain
	m.mu.Unlock()
	handoff := m.handingOver() // the new process of an upgrade serves: no STOPPING=1, no drain
	// Nor from a new process stopping before its Ready: the old one serves.
	if !handoff && !oldServes() {
		if err := notifySystemd("STOPPING=1"); err != nil {
			m.log(slog.LevelWarn, "shutdown: systemd notification failed", slog.String("error", err.Error()))
		}
	}
	m.log(slog.LevelInfo, "shutdown: started", slog.Any("cause", cause), slog.Duration("budget", m.cfg.timeout))
	var drained time.Duration
	if handoff {
		m.handoff()
	} else {
		drained = m.drain(start, skipDrain)
	}
	m.cancel(cause)

	r := newRunner(m, start)
	r.runHooks()
	m.hooksEnded()
	r.waitComponents()
	r.stop()
	m.afterStop()
	m.finish(r, drained)
}

// finish builds the result and the report, hands the last record to the
// log queue and closes done.
func (m *Manager) finish(r *runner, drained time.Duration) {
	m.mu.Lock()
	m.sealed = true
	triggered, comps, hookErrs, rows, text := m.triggered, m.comps, m.hookErrs, m.rows, m.causeText
	m.mu.Unlock()
	errs := slices.Clone(triggered)
	for _, c := range comps {
		if c.herr != nil {
			errs = append(errs, c.herr)
		}
		rows = append(rows, c.row(r.start))
	}
	errs = append(errs, hookErrs...)
	m.err = errors.Join(errs...)
	elapsed := time.Since(r.start)
	m.report = newReport(text, m.cfg.timeout, drained, elapsed, rows)
	late, lateAttrs := m.lateArrivals()
	m.report.LateArrivals = late

	flushed := make(chan struct{})
	if m.err != nil {
		m.logThen(flushed, slog.LevelError, "shutdown: finished with errors", append([]slog.Attr{slog.Duration("elapsed", elapsed),
			slog.Int("failed", len(errs)), slog.Any("error", m.err)}, lateAttrs...)...)
	} else {
		m.logThen(flushed, slog.LevelInfo, "shutdown: finished", append([]slog.Attr{slog.Duration("elapsed", elapsed)}, lateAttrs...)...)
	}
	// Wait waits for the log handler 1s at most, and never past the budget
	// plus 1s: a stuck handler must not hold the process.
	if d := min(time.Second, time.Until(r.end.Add(time.Second))); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-flushed:
		case <-t.C:
		}
		t.Stop()
	}
	close(m.done)
}

// ignorable reports whether the plain error of a component that did not
// start the shutdown means a clean stop of a shutdown with the given cause.
func ignorable(err, cause error) bool {
	return is(err, context.Canceled) || is(err, http.ErrServerClosed) || is(err, cause) ||
		is(cause, ErrUpgraded) && is(err, net.ErrClosed) // its listener was handed over
}

// cleanStop reports whether err, returned by a hook, a component or Run's
// function or given to TriggerCause, means a clean stop wherever it comes
// from, and so never enters the result (DESIGN step 8): a *SignalError
// from any Manager, wrapped or not (a component returning
// context.Cause of another Manager's Context), and a cause wrapping
// ErrUpgraded. A joined error is a clean stop only when each error in it
// is one: a hook that returns errors.Join(err, context.Cause(ctx)) still
// reports err. This is the one place for that rule.
func cleanStop(err error) (clean bool) {
	defer func() {
		if recover() != nil {
			clean = false // an Unwrap or Is method that panics: no match
		}
	}()
	for err != nil {
		if _, ok := err.(*SignalError); ok || err == ErrUpgraded {
			return true
		}
		if x, ok := err.(interface{ Is(error) bool }); ok && x.Is(ErrUpgraded) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			for _, e := range errs {
				if !cleanStop(e) {
					return false
				}
			}
			return len(errs) > 0
		default:
			return false
		}
	}
	return false
}

// is is errors.Is, but an Is or Unwrap method that panics (on a typed nil
// pointer, say) is no match: it runs on a goroutine that must report.
func is(err, target error) (match bool) {
	defer func() {
		if recover() != nil {
			match = false
		}
	}()
	return errors.Is(err, target)
}

var (
	errTriggered = errors.New("shutdown: triggered")
	errReleased  = errors.New("shutdown: released")
)
