package shutdown

// This file runs components: the functions started by Go and Run, their
// end, and the waits for them at AfterRun hooks and at the end.

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Go starts fn(m.Context()) on a goroutine of its own, at once, as a
// component: a long-lived part of the service, such as a server or a queue
// consumer. As with oklog/run's actors, the first to return stops the
// others, nil included: a component that returns before shutdown has
// started starts it, with the cause `shutdown: component "name" returned`
// (wrapping its error), and its error enters the result. During shutdown,
// components are expected to return: a server's once its hook has drained
// it, a worker's when [Manager.Context] is done. [Manager.Wait] waits for
// every component; one still running at the end of the budget is abandoned
// and reported as [ErrTimeout] with its goroutine's stack. A panic in fn is
// recovered and reported as [ErrPanic].
//
// Go before the hooks start (during the drain delay, say) starts fn, whose
// context may be done already. From the hooks' start on (and after
// [Manager.Release]), Go does not start fn and logs an error record naming
// it, since nothing could stop it any more; it never panics for being late.
// Several components may share a name. Go panics if name is empty or fn is
// nil.
func (m *Manager) Go(name string, fn func(ctx context.Context) error) {
	if name == "" {
		panic("shutdown: Go: name is empty")
	}
	if fn == nil {
		panic(fmt.Sprintf("shutdown: Go(%q): fn is nil", name))
	}
	if st, ok := m.startComponent(name, isComponent, fn); !ok {
		m.log(slog.LevelError, "shutdown: component started after "+st.String()+"; not run", slog.String("component", name))
	}
}

// Run wraps main: it starts fn as a component named "run" (see
// [Manager.Go]), then waits for shutdown to finish and returns its result,
// as [Manager.Wait] does. fn returning starts shutdown; its *HookError's
// Error says "run function". Run panics if fn is nil or if Run was called
// before. Called after hooks have started or after [Manager.Release], it does
// not call fn and returns the result.
//
// The exit code follows from Run's result as the last lines of main: exit 0
// when it is nil (a clean shutdown, signal-triggered or not) and 1
// otherwise:
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
	ran := m.ranRun
	m.ranRun = true
	m.mu.Unlock()
	if ran {
		panic("shutdown: Run called twice")
	}
	m.startComponent("run", isRun, fn)
	return m.Wait()
}

// component is one function started by Go or Run.
type component struct {
	task
	ended chan struct{} // closed when it has returned

	// Guarded by Manager.mu.
	end       time.Time
	herr      *HookError // how it failed, if it did
	abandoned bool       // outlived the budget
}

func (c *component) returned() bool { return !c.end.IsZero() }

// componentsRunning counts the components that have not returned; the caller holds
// m.mu.
func (m *Manager) componentsRunning() int {
	n := 0
	for _, c := range m.comps {
		if !c.returned() {
			n++
		}
	}
	return n
}

// row is the component's line in the Report.
func (c *component) row(start time.Time) HookReport {
	h := HookReport{Name: c.name, Component: true, Start: c.start.Sub(start), Elapsed: c.end.Sub(c.start), Outcome: "ok", Err: c.herr}
	if c.herr != nil {
		h.Outcome = c.herr.outcome.String()
	}
	return h
}

// startComponent runs fn as a component, unless hooks have started; it
// reports whether it did.
func (m *Manager) startComponent(name string, k kind, fn func(context.Context) error) (state, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state >= hooking {
		return m.state, false
	}
	c := &component{task: task{name: name, kind: k, start: time.Now()}, ended: make(chan struct{})}
	m.comps = append(m.comps, c)
	go c.run(func() error { return fn(m.ctx) }, func(res result) { m.componentReturned(c, res) })
	return m.state, true
}

// componentReturned records a component's end and, before shutdown, starts
// it with the component as its cause.
func (m *Manager) componentReturned(c *component, res result) {
	now := time.Now()
	herr := c.hookError(res, now)
	starts := m.begin(&componentCause{c.name, c.kind, res.err}, nil, c)
	m.mu.Lock()
	cause := m.cause
	m.mu.Unlock()
	// The error of the component that started shutdown enters the result
	// unless it is a clean stop from anywhere (a *SignalError); another's
	// does not when it means a clean stop of this shutdown either.
	// errors.Is calls the user's methods: the lock is released.
	if herr != nil && herr.outcome == failed && (cleanStop(res.err) || !starts && ignorable(res.err, cause)) {
		herr = nil
	}
	m.mu.Lock()
	if c.abandoned { // reported already; Wait may have returned
		m.mu.Unlock()
		return
	}
	c.end, c.herr = now, herr
	st := m.state
	if st != released {
		// Queued before ended is closed, so before Wait's last record.
		m.logEnd(&c.task, herr, now.Sub(c.start), 0)
	}
	close(c.ended)
	if st == draining && m.byComponent && m.componentsRunning() == 0 {
		// Components that returned together (a batch done): the first
		// started shutdown while the others still ran; now nothing is
		// left to drain.
		m.cutOnce.Do(func() { m.cutByComps = true; close(m.drainCut) })
	}
	m.mu.Unlock()
}

// componentCause is the cause of a shutdown that a component started by
// returning: `shutdown: component "grpc" returned: <its error>`.
type componentCause struct {
	name string
	kind kind
	err  error
}

func (e *componentCause) Error() string {
	s := fmt.Sprintf("shutdown: component %q returned", e.name)
	if e.kind == isRun {
		s = "shutdown: run function returned"
	}
	if e.err != nil {
		s += fmt.Sprintf(": %v", e.err) // fmt recovers a panicking Error method
	}
	return s
}

func (e *componentCause) Unwrap() error { return e.err }

// awaitComponents waits for the components that AfterRun hooks wait for,
// until the budget ends; it names the first one still running then, or
// returns "".
func (r *runner) awaitComponents() string {
	for _, c := range r.waitFor {
		select {
		case <-c.ended:
		case <-r.budget.Done():
			select {
			case <-c.ended:
			default:
				if c.kind == isRun {
					return "Run's function"
				}
				return fmt.Sprintf("component %q", c.name)
			}
		}
	}
	return ""
}

// waitComponents waits for every component until the budget ends, then
// abandons those still running, with their stacks.
func (r *runner) waitComponents() {
	m := r.m
	m.mu.Lock()
	comps := m.comps // Go starts no more: hooks have begun
	m.mu.Unlock()
	for _, c := range comps {
		select {
		case <-c.ended:
		case <-r.budget.Done():
		}
	}
	now := time.Now()
	var stuck []*task
	m.mu.Lock()
	for _, c := range comps {
		if !c.returned() {
			c.abandoned, c.end = true, now
			c.herr = &HookError{Name: c.name, Elapsed: now.Sub(c.start), Err: ErrTimeout, kind: c.kind, outcome: timedOut, limit: m.cfg.timeout, byBudget: true}
			stuck = append(stuck, &c.task)
		}
	}
	m.mu.Unlock()
	if len(stuck) == 0 {
		return
	}
	st := r.capture(stuck...) // one capture for all of them
	for _, c := range comps {
		if c.abandoned {
			c.herr.Stack = st[&c.task]
			m.log(slog.LevelError, "shutdown: component abandoned at the end of the budget", slog.String("component", c.name),
				slog.Duration("elapsed", c.herr.Elapsed), slog.String("outcome", "timeout"), slog.Any("error", c.herr),
				slog.String("stack", string(c.herr.Stack)))
		}
	}
}
