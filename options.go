package shutdown

import (
	"fmt"
	"log/slog"
	"os"
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
	grace      *gracePeriodOption   // the budget came from WithGracePeriod
	adaptive   *adaptiveDrainOption // WithAdaptiveDrain (drain.go)

	// restarts (restart.go)
	upgradeSignal  os.Signal
	upgradeTimeout time.Duration
	pidFile        string
	binary         string // the program Upgrade starts; a seam for tests
}

type signalsOption []os.Signal

// WithSignals sets the signals that start shutdown. It defaults to SIGTERM
// and SIGINT; with no signals, only [Manager.Trigger] (or a component
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
// [Manager.Wait] returning; hooks and components still running at its end
// are abandoned and hooks not yet started are skipped. [Manager.Wait]
// returns within the budget plus the time to capture abandoned goroutines'
// stacks (at most 4 captures, each stopping the world for about 7ms per
// 1,000 goroutines) and at most 1s for the log handler to take the last
// records. It defaults to
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
// Run's function or a component ([Manager.Go]) started shutdown by
// returning and no other component is still running: nothing is left to
// drain.
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
// Records go to the handler in order, from a goroutine of the Manager's
// own, never the one that keeps time: a handler that blocks delays no hook
// and changes no outcome, and [Manager.Wait] waits for it at most 1s. A
// handler that panics (or calls runtime.Goexit, as t.FailNow does) loses
// that record, not the process nor the records after it: the next record
// it handles carries "dropped_records", how many were lost.
//
// Records use these attribute keys: "cause" (what started shutdown, or a
// late TriggerCause's error), "budget" and "delay" (the budget and the drain
// delay, at the start), "hook" (a hook's name), "component" (a component's
// name; "run" for Run's function),
// "elapsed" (a duration), "outcome" ("ok", "failed", "timeout", "panic",
// "skipped"), "error", "bound" (the limit a slow hook came close to),
// "stack" (where an abandoned hook is stuck), "failed" (how many hooks
// failed, in the last record), and "signal", "code" and a "running" group
// per hook still running (a second signal's forced exit); for
// [WithAdaptiveDrain], "least", "most", "reason", "rate", "window",
// "requests", "span" and "late_arrivals". A hook's start is
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
