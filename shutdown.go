// Package shutdown runs a service's cleanup hooks, in reverse order and
// within one time budget, when the process receives SIGTERM or SIGINT, so
// that it exits cleanly before the supervisor's SIGKILL arrives.
//
// It is like [signal.NotifyContext] plus an ordered list of cleanups: a
// [Manager] installs the signal handler in [New], services register hooks
// with [Manager.Add], and [Manager.Run] wraps main. The sequence is:
//
//  1. A signal, [Manager.Trigger] or Run's function returning starts it;
//     [Manager.Stopping] is closed and [Manager.ReadinessHandler] answers 503.
//  2. For [WithDrainDelay] the service keeps serving, so load balancers
//     stop sending new connections before listeners close.
//  3. [Manager.Context] is cancelled with the cause.
//  4. Hooks run last added first, one at a time ([Concurrent] sets run
//     together), each bounded by its [Timeout] and by the budget
//     ([WithTimeout]); a hook still running at its bound is abandoned.
//  5. [Manager.Wait] and Run return one error that names every hook that
//     failed, timed out, panicked or was skipped.
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
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout is the total budget of a shutdown when no [WithTimeout] is
// given: 25 s fits Kubernetes' default grace period of 30 s with room for the
// runtime to exit.
const DefaultTimeout = 25 * time.Second

// Option configures a [Manager] in [New].
type Option interface {
	apply(*config)
	String() string
}

type config struct {
	signals    []os.Signal
	timeout    time.Duration
	drain      time.Duration
	drainSet   bool
	logger     *slog.Logger
	forceExit  bool
	notify     func(chan<- os.Signal, ...os.Signal) // signal.Notify; a seam for tests
	exit       func(int)                            // os.Exit; a seam for tests
	signalsSet bool
	grace      *gracePeriodOption // the budget came from WithGracePeriod
}

type signalsOption []os.Signal

// WithSignals sets the signals that start shutdown. It defaults to SIGTERM
// and SIGINT; with no signals, only [Manager.Trigger] (or Run's function
// returning) starts it. It panics on a nil signal, and on SIGKILL or SIGSTOP,
// which no process can catch.
func WithSignals(sigs ...os.Signal) Option {
	for i, s := range sigs {
		if s == nil {
			panic(fmt.Sprintf("shutdown: WithSignals: signal %d is nil", i))
		}
		if uncatchable(s) {
			panic(fmt.Sprintf("shutdown: WithSignals: %s cannot be caught", signalName(s)))
		}
	}
	return signalsOption(append([]os.Signal(nil), sigs...))
}

func (o signalsOption) apply(c *config) { c.signals, c.signalsSet = o, true }
func (o signalsOption) String() string {
	s := "shutdown.WithSignals("
	for i, sig := range o {
		if i > 0 {
			s += ", "
		}
		s += signalName(sig)
	}
	return s + ")"
}

type timeoutOption time.Duration

// WithTimeout sets the total budget of a shutdown, from its start to
// [Manager.Wait] returning; hooks still running at its end are abandoned and
// hooks not yet started are skipped. [Manager.Wait] returns within the
// budget plus the time to capture abandoned hooks' stacks (at most 4, about
// 2ms per 1,000 goroutines each; see the README). It defaults to
// [DefaultTimeout] and panics if d is not positive. Keep it a few seconds
// shorter than the supervisor's grace period (terminationGracePeriodSeconds,
// TimeoutStopSec), or use [WithGracePeriod].
func WithTimeout(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("shutdown: WithTimeout: d must be positive, got %v", d))
	}
	return timeoutOption(d)
}

func (o timeoutOption) apply(c *config) { c.timeout, c.grace = time.Duration(o), nil }
func (o timeoutOption) String() string {
	return fmt.Sprintf("shutdown.WithTimeout(%v)", time.Duration(o))
}

// graceMargin is what [WithGracePeriod] leaves between the end of the
// budget and the supervisor's SIGKILL, for the runtime to exit and for a
// slow log flush.
const graceMargin = 2 * time.Second

type gracePeriodOption struct{ grace, preStop time.Duration }

// WithGracePeriod sets the total budget from the pod's
// terminationGracePeriodSeconds (grace) and the time its preStop hook takes
// (preStop, 0 if it has none): grace − preStop − 2s. The grace period counts
// from the start of termination, before preStop runs, and the 2s leave room
// for the process to exit before the SIGKILL. A preStop hook is taken to have
// covered the propagation delay (a `preStop: sleep`, say), so with preStop > 0
// the implicit Kubernetes drain delay is 0; an explicit [WithDrainDelay]
// still applies, and [New] panics if it does not fit the budget. It replaces
// an earlier [WithTimeout] (and a later one replaces it). It panics if grace
// is not positive, if preStop is negative, or if they leave no budget.
func WithGracePeriod(grace, preStop time.Duration) Option {
	if grace <= 0 {
		panic(fmt.Sprintf("shutdown: WithGracePeriod: grace must be positive, got %v", grace))
	}
	if preStop < 0 {
		panic(fmt.Sprintf("shutdown: WithGracePeriod: preStop must not be negative, got %v", preStop))
	}
	if grace-preStop-graceMargin <= 0 {
		panic(fmt.Sprintf("shutdown: WithGracePeriod: grace %v leaves no budget after preStop %v and the %v margin", grace, preStop, graceMargin))
	}
	return &gracePeriodOption{grace, preStop}
}

func (o *gracePeriodOption) budget() time.Duration { return o.grace - o.preStop - graceMargin }
func (o *gracePeriodOption) apply(c *config)       { c.timeout, c.grace = o.budget(), o }
func (o *gracePeriodOption) String() string {
	return fmt.Sprintf("shutdown.WithGracePeriod(%v, %v)", o.grace, o.preStop)
}

type drainOption time.Duration

// WithDrainDelay sets how long the service keeps serving after shutdown
// starts, with readiness failing, before [Manager.Context] is cancelled and
// hooks run: the time load balancers and kube-proxy need to stop sending new
// connections. It counts inside the budget. It defaults to 0, or, when
// KUBERNETES_SERVICE_HOST is set, to min(5s, budget/5) (still 0 after a
// [WithGracePeriod] with a preStop time). It panics if d is negative; [New]
// panics if it is not shorter than the budget. The delay is skipped when
// Run's function returns before any signal.
func WithDrainDelay(d time.Duration) Option {
	if d < 0 {
		panic(fmt.Sprintf("shutdown: WithDrainDelay: d must not be negative, got %v", d))
	}
	return drainOption(d)
}

func (o drainOption) apply(c *config) { c.drain, c.drainSet = time.Duration(o), true }
func (o drainOption) String() string {
	return fmt.Sprintf("shutdown.WithDrainDelay(%v)", time.Duration(o))
}

type loggerOption struct{ l *slog.Logger }

// WithLogger sets the logger for shutdown's records. It defaults to
// [slog.Default], looked up at the time of each record. It panics if l is nil;
// to silence the manager, give it a logger whose handler discards records.
//
// Records use these attribute keys: "cause" (what started shutdown, or a
// late TriggerCause's error), "budget" and "delay" (the budget and the drain
// delay, at the start), "hook" (a hook's name; "run" for Run's function),
// "elapsed" (a duration), "outcome" ("ok", "failed", "timeout", "panic",
// "skipped"), "error", "bound" (the limit a slow hook came close to),
// "stack" (where an abandoned hook is stuck), "failed" (how many hooks
// failed, in the last record), and "signal", "code" and a "running" group
// per hook still running (a second signal's forced exit). A hook's start is
// logged at Debug; its end at Info, at Warn when it used 80% or more of its
// bound, and at Error when it failed.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		panic("shutdown: WithLogger: l is nil")
	}
	return loggerOption{l}
}

func (o loggerOption) apply(c *config) { c.logger = o.l }
func (o loggerOption) String() string  { return "shutdown.WithLogger(...)" }

type forceExitOption bool

// WithForceExit sets what a signal does once shutdown has started. With true
// (the default), it logs the hooks still running and exits the process at
// once with code 128 + the signal's number (143 for SIGTERM), as a person
// pressing Ctrl-C twice expects; that exit never returns. With false, it ends
// the drain delay early, if one is running, and is otherwise only logged.
func WithForceExit(on bool) Option { return forceExitOption(on) }

func (o forceExitOption) apply(c *config) { c.forceExit = bool(o) }
func (o forceExitOption) String() string  { return fmt.Sprintf("shutdown.WithForceExit(%t)", bool(o)) }

// state is where a Manager is in its life; it decides what a late Add does.
type state int

const (
	idle     state = iota // serving; no shutdown yet
	draining              // shutdown started; drain delay running
	hooking               // hooks running
	finished              // the last hook has ended
)

// runState is where Run's fn is.
type runState int

const (
	runNone      runState = iota // Run not called
	runActive                    // fn running
	runReturned                  // fn returned
	runAbandoned                 // fn outlived the budget
	runRefused                   // Run called after hooks started: fn not called
)

// A Manager coordinates one process's shutdown: it listens for signals,
// holds the hooks and runs the shutdown sequence once. All its methods are
// safe for concurrent use. Create a Manager with [New]; the zero value is not
// usable, because the signal handler must be installed before the first
// signal can arrive.
type Manager struct {
	cfg   config
	sigCh chan os.Signal // nil when no signals are configured

	stopping chan struct{} // closed at step 1
	drainCut chan struct{} // closed by a later signal with WithForceExit(false)
	fnDone   chan struct{} // closed when Run's fn has returned
	done     chan struct{} // closed when shutdown has finished
	ctx      context.Context
	cancel   context.CancelCauseFunc
	cutOnce  sync.Once

	mu       sync.Mutex
	state    state
	cause    error   // what started shutdown
	result   []error // TriggerCause errors, fn's error, hook errors, in that order
	sealed   bool    // the result is built: a TriggerCause now is too late for it
	hookErrs []error
	rows     []HookReport   // one per hook, in the order they ended
	report   *Report        // set when shutdown has finished
	stack    []entry        // pending hooks in registration order; the last runs next
	sets     map[string]int // Concurrent set name -> index in stack, while pending
	live     *runningSet    // the Concurrent set now running, if any
	running  []running      // hooks started and not yet ended (abandoned included)
	runState runState
	fnStart  time.Time
	fnLabel  string // the pprof label of fn's goroutine
	fnErr    error
	skipRun  bool // shutdown started by fn: no drain
	start    time.Time
	err      error
}

// New returns a Manager configured by opts and installs its signal handler at
// once, as [signal.NotifyContext] does, so a signal that arrives before
// [Manager.Wait] or [Manager.Run] is called still starts an orderly shutdown.
// It panics if an option is nil or an explicit drain delay is not shorter
// than the budget.
func New(opts ...Option) *Manager {
	cfg := config{
		signals:   defaultSignals,
		timeout:   DefaultTimeout,
		forceExit: true,
		notify:    signal.Notify,
		exit:      os.Exit,
	}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("shutdown: New: option %d is nil", i))
		}
		o.apply(&cfg)
	}
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
		stopping: make(chan struct{}),
		drainCut: make(chan struct{}),
		fnDone:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	m.ctx, m.cancel = context.WithCancelCause(context.Background())
	if len(cfg.signals) > 0 {
		m.sigCh = make(chan os.Signal, 1)
		cfg.notify(m.sigCh, cfg.signals...)
		go m.watchSignals()
	}
	return m
}

// log emits one record through the configured logger, or slog.Default() at
// the time of the call. It checks Enabled first, so a silenced logger costs
// no allocation per hook.
func (m *Manager) log(level slog.Level, msg string, attrs ...slog.Attr) {
	l := m.cfg.logger
	if l == nil {
		l = slog.Default()
	}
	if !l.Enabled(context.Background(), level) {
		return
	}
	l.LogAttrs(context.Background(), level, msg, attrs...)
}

func (m *Manager) logEnabled(level slog.Level) bool {
	l := m.cfg.logger
	if l == nil {
		l = slog.Default()
	}
	return l.Enabled(context.Background(), level)
}

// watchSignals reads signals until shutdown has finished. It never calls user
// code (loggers included) itself: a stuck log handler must not stop the
// forced exit.
func (m *Manager) watchSignals() {
	defer signal.Stop(m.sigCh)
	first := true
	for {
		select {
		case <-m.done:
			return
		case sig := <-m.sigCh:
			if first {
				// Even when Trigger or fn started shutdown already, this
				// signal counts as the first one.
				first = false
				m.begin(&signalError{sig}, false)
				continue
			}
			m.laterSignal(sig)
		}
	}
}

// laterSignal handles a signal after the first (DESIGN step 7).
func (m *Manager) laterSignal(sig os.Signal) {
	if !m.cfg.forceExit {
		m.mu.Lock()
		inDrain := m.state == draining && m.cfg.drain > 0 && !m.skipRun
		m.mu.Unlock()
		m.cutOnce.Do(func() { close(m.drainCut) })
		msg := "shutdown: signal received during shutdown; ignored"
		if inDrain {
			msg = "shutdown: signal received during shutdown; ending the drain delay early"
		}
		go m.log(slog.LevelWarn, msg, slog.String("signal", signalName(sig)))
		return
	}
	m.mu.Lock()
	now := time.Now()
	var hooks []running
	if m.runState == runActive || m.runState == runAbandoned {
		// Run's fn is reported like a hook: when AfterRun hooks wait for it,
		// it is what shutdown is stuck in.
		hooks = append(hooks, running{name: "run", start: m.fnStart, label: m.fnLabel})
	}
	hooks = append(hooks, m.running...)
	m.mu.Unlock()
	logged := make(chan struct{})
	// The record goes out on another goroutine: it calls the user's log
	// handler, which must not be able to hold up the exit.
	go func() {
		defer close(logged)
		labels := make([]string, len(hooks))
		for i, h := range hooks {
			labels[i] = h.label
		}
		var st map[string][]byte
		if len(labels) > 0 {
			st = stacks(labels...)
		}
		attrs := []slog.Attr{slog.String("signal", signalName(sig)), slog.Int("code", 128+signalNumber(sig))}
		for _, h := range hooks {
			attrs = append(attrs, slog.Group("running", slog.String("hook", h.name),
				slog.Duration("elapsed", now.Sub(h.start)), slog.String("stack", string(st[h.label]))))
		}
		m.log(slog.LevelError, "shutdown: second signal; exiting at once", attrs...)
	}()
	t := time.NewTimer(time.Second)
	select {
	case <-logged:
	case <-t.C:
	}
	t.Stop()
	m.cfg.exit(128 + signalNumber(sig))
}

// Trigger starts shutdown now, as a signal would. It is idempotent: calls
// after the first do nothing. When Trigger returns, [Manager.Stopping] is
// closed. It does not wait for shutdown to finish; use [Manager.Wait].
func (m *Manager) Trigger() { m.TriggerCause(nil) }

// TriggerCause is [Manager.Trigger] with a reason: err becomes the cause of
// [Manager.Context] and is joined into the error that [Manager.Wait] and
// [Manager.Run] return. TriggerCause(nil) is Trigger. After shutdown has
// started, the cause does not change; err is logged and joined into the
// result, unless shutdown has finished: then it is only logged.
func (m *Manager) TriggerCause(err error) {
	var cause error = errTriggered
	if err != nil {
		cause = err
	}
	if m.begin(cause, false) || err == nil {
		return
	}
	m.mu.Lock()
	sealed := m.sealed
	if !sealed {
		m.result = append(m.result, err)
	}
	m.mu.Unlock()
	if sealed {
		// Wait returns the same error to every caller: one that may have
		// returned already cannot change.
		m.log(slog.LevelError, "shutdown: TriggerCause after shutdown finished; not in the result", slog.String("cause", err.Error()))
		return
	}
	m.log(slog.LevelError, "shutdown: TriggerCause after shutdown started", slog.String("cause", err.Error()))
}

// begin starts shutdown once; it reports whether this call started it.
func (m *Manager) begin(cause error, fromRun bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != idle {
		return false
	}
	m.state = draining
	m.cause = cause
	m.skipRun = fromRun
	m.start = time.Now()
	if cause != errTriggered && !fromRun {
		if _, isSig := cause.(*signalError); !isSig {
			m.result = append(m.result, cause)
		}
	}
	close(m.stopping)
	go m.sequence()
	return true
}

// Stopping returns a channel that is closed when shutdown starts (step 1),
// before the drain delay: from then on [Manager.ReadinessHandler] answers 503.
// It is closed before [Manager.Trigger] returns.
func (m *Manager) Stopping() <-chan struct{} { return m.stopping }

// Context returns a context for background work, cancelled when the drain
// delay has ended (step 3 in the package doc), with the shutdown's cause:
// [context.Cause] says "shutdown: received SIGTERM" or the error given to
// [Manager.TriggerCause]. Do not use it as an http.Server's BaseContext:
// requests in flight would be cancelled before the server has drained them.
func (m *Manager) Context() context.Context { return m.ctx }

// Done returns a channel that is closed when shutdown has finished: every
// hook has ended or been abandoned, and the result is ready.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Wait blocks until shutdown has finished and returns its result, the same
// error to every caller: [errors.Join] of the [Manager.TriggerCause] errors,
// Run's fn error, and a [*HookError] for each hook that failed, timed out,
// panicked or was skipped. A clean shutdown, signal-triggered or not, returns
// nil. Wait does not start shutdown.
func (m *Manager) Wait() error {
	<-m.done
	return m.err
}

// Run wraps main: it calls fn with [Manager.Context] on a goroutine of its
// own, starts shutdown when a signal arrives or fn returns (skipping the
// drain delay then: there is nothing left to drain), waits for shutdown to
// finish and returns its result, as [Manager.Wait] does. fn's error is part
// of the result unless it is [context.Canceled], the shutdown's own cause or
// [http.ErrServerClosed]. A panic in fn is recovered and reported as
// [ErrPanic]; an fn still running at the end of the budget is abandoned and
// reported as [ErrTimeout], both as a [*HookError] named "run".
//
// Hooks added with [AfterRun] start only after fn has returned. Run panics if
// fn is nil or if Run was called before. Called after hooks have started, it
// does not call fn and returns the shutdown's result.
//
// The exit code follows from Run's result as the last lines of main: exit 0
// when it is nil (a clean shutdown, signal-triggered or not) and 1
// otherwise (a failed hook, a failed fn, a TriggerCause error):
//
//	if err := m.Run(serve); err != nil {
//		fmt.Fprintln(os.Stderr, err)
//		os.Exit(1)
//	}
//
// The forced exit on a later signal (see [WithForceExit]) happens inside
// the library, with code 128+n, and Run never returns then.
func (m *Manager) Run(fn func(ctx context.Context) error) error {
	if fn == nil {
		panic("shutdown: Run: fn is nil")
	}
	m.mu.Lock()
	if m.runState != runNone {
		m.mu.Unlock()
		panic("shutdown: Run called twice")
	}
	if m.state >= hooking {
		m.runState = runRefused
		m.mu.Unlock()
		return m.Wait()
	}
	m.runState = runActive
	m.fnStart = time.Now()
	m.fnLabel = newLabel()
	m.mu.Unlock()
	go m.callFn(fn)
	return m.Wait()
}

func (m *Manager) callFn(fn func(ctx context.Context) error) {
	// fn runs on a goroutine of its own, so that even runtime.Goexit in fn
	// is reported rather than losing this goroutine.
	out := make(chan result, 1)
	go runLabelled(m.fnLabel, m.ctx, fn, out)
	r := <-out
	var err error
	switch {
	case r.panicked:
		err = &HookError{Name: "run", Elapsed: time.Since(m.fnStart), Err: r.err, Stack: r.stack, kind: kindPanic}
	case r.goexit: // reported like a hook that called it
		err = &HookError{Name: "run", Elapsed: time.Since(m.fnStart), Err: r.err, kind: kindFailed}
	case r.err != nil:
		err = r.err
	}
	m.mu.Lock()
	if m.runState == runActive {
		m.fnErr = err
	}
	m.runState = runReturned
	m.mu.Unlock()
	close(m.fnDone)
	cause := errRunReturned
	if err != nil {
		cause = fmt.Errorf("%w: %w", errRunReturned, err)
	}
	m.begin(cause, true)
}

// sequence runs DESIGN steps 2 to 8 on its own goroutine.
func (m *Manager) sequence() {
	m.mu.Lock()
	start, cause, skipDrain := m.start, m.cause, m.skipRun
	m.mu.Unlock()
	budgetEnd := start.Add(m.cfg.timeout)
	if err := notifySystemd("STOPPING=1"); err != nil {
		m.log(slog.LevelWarn, "shutdown: systemd notification failed", slog.String("error", err.Error()))
	}
	m.log(slog.LevelInfo, "shutdown: started", slog.String("cause", cause.Error()), slog.Duration("budget", m.cfg.timeout))

	var drained time.Duration
	if d := m.cfg.drain; d > 0 && !skipDrain {
		m.log(slog.LevelInfo, "shutdown: drain delay", slog.Duration("delay", d))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-m.drainCut:
		}
		t.Stop()
		drained = time.Since(start)
	}
	m.cancel(cause)

	r := newRunner(m, start, budgetEnd)
	r.run()

	// Wait for Run's fn, if it is still running, up to the end of the budget.
	m.mu.Lock()
	fnRunning := m.runState == runActive
	m.mu.Unlock()
	if fnRunning {
		select {
		case <-m.fnDone:
		case <-r.budgetOver:
			m.mu.Lock()
			var herr *HookError
			if m.runState == runActive {
				m.runState = runAbandoned
				herr = &HookError{Name: "run", Elapsed: time.Since(m.fnStart), Err: ErrTimeout, kind: kindTimeout, limit: m.cfg.timeout, byBudget: true}
				m.fnErr = herr
			}
			m.mu.Unlock()
			if herr != nil {
				r.abandon(herr, m.fnLabel)
				r.logEnd("run", herr, herr.Elapsed, m.cfg.timeout)
			}
		}
	}
	r.stop()

	// Nothing records a hook any more: take the results, then match and
	// print errors with the lock released. That calls user code (fn's
	// error's Is and Unwrap methods, the cause's Error method), which must
	// not hold the lock that the signal goroutine takes before a forced exit.
	m.mu.Lock()
	m.sealed = true
	errs := append([]error(nil), m.result...)
	fnErr, hookErrs := m.fnErr, m.hookErrs
	m.mu.Unlock()
	if fnErr != nil && !ignorable(fnErr, cause) {
		errs = append(errs, fnErr)
	}
	errs = append(errs, hookErrs...)
	m.err = errors.Join(errs...) // read by Wait after done is closed
	nfail := len(hookErrs)
	elapsed := time.Since(start)
	m.report = m.buildReport(cause.Error(), elapsed, drained)

	if m.err != nil {
		m.log(slog.LevelError, "shutdown: finished with errors", slog.Duration("elapsed", elapsed), slog.Int("failed", nfail), slog.String("error", m.err.Error()))
	} else {
		m.log(slog.LevelInfo, "shutdown: finished", slog.Duration("elapsed", elapsed))
	}
	close(m.done)
}

// ignorable reports whether fn's error means a clean stop of a shutdown
// with the given cause.
func ignorable(err, cause error) bool {
	if _, ok := err.(*HookError); ok {
		return false
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, cause)
}

var (
	errTriggered   = errors.New("shutdown: triggered")
	errRunReturned = errors.New("shutdown: run function returned")
)

// signalError is the cause of a signal-started shutdown. It never enters
// the result: a signal is how a clean shutdown starts.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string { return "shutdown: received " + signalName(e.sig) }

// signalName spells the usual signals the way people write them.
func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	if n, ok := extraSignalNames[s]; ok {
		return n
	}
	return s.String()
}

func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 1
}

// notifySystemd sends state to systemd's notification socket, as
// sd_notify(3) does, when NOTIFY_SOCKET is set: a path, or an abstract
// socket starting with '@'. Without NOTIFY_SOCKET it does nothing.
func notifySystemd(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	return nil
}
