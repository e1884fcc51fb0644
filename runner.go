package shutdown

// This file runs the user's code: each hook, component and Run function on
// a goroutine of its own (task.run), and the hooks in their order, each
// with its bound, its abandonment and its report.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// task is one goroutine running user code: a hook, a component or Run's
// function.
type task struct {
	name  string
	kind  kind
	start time.Time
	gid   atomic.Uint64 // its goroutine's id, to find its stack if it is abandoned
}

// result is how a task's function ended.
type result struct {
	err     error
	stack   []byte
	panic   bool
	timeout bool // a hook returned context.DeadlineExceeded after its deadline
}

// errGoexit is the Err of a task that called runtime.Goexit; it is always
// wrapped in a HookError, which names the task.
var errGoexit = errors.New("called runtime.Goexit")

// run calls f on the calling goroutine and hands how it ended to report,
// from a deferred function, so that a panic or runtime.Goexit in f is
// reported too. DESIGN chose recovering over errgroup's stance (which does
// not recover): one panicking hook must not stop the others from running
// during exit.
func (t *task) run(f func() error, report func(result)) {
	t.gid.Store(goid())
	var res result
	returned := false
	defer func() {
		if v := recover(); v != nil {
			stack := debug.Stack()
			if p, ok := v.(relayedPanic); ok { // from an adapter's goroutine
				v, stack = p.value, p.stack
			}
			err, ok := v.(error)
			if !ok {
				err = fmt.Errorf("%v", v)
			}
			res = result{err: err, stack: stack, panic: true}
		} else if !returned {
			res = result{err: errGoexit}
		}
		report(res)
	}()
	res.err = f()
	returned = true
}

// hookError turns how a task ended into its error, or nil.
func (t *task) hookError(res result, end time.Time) *HookError {
	if res.err == nil && !res.panic {
		return nil
	}
	e := &HookError{Name: t.name, Elapsed: end.Sub(t.start), Err: res.err, Stack: res.stack, kind: t.kind, outcome: failed}
	if res.panic {
		e.outcome = panicked
	}
	return e
}

func (k kind) key() string {
	if k == isHook {
		return "hook"
	}
	return "component"
}

// hookSet is a Concurrent set: its members run together through a zero
// errgroup.Group, not WithContext, so one failure cancels no sibling; each
// member reports its own error.
type hookSet struct {
	name    string
	members []entry
	r       *runner
	g       errgroup.Group
	pending int // members started and not ended; guarded by Manager.mu
}

// join starts e as a member; the caller holds Manager.mu.
func (s *hookSet) join(e entry) {
	s.pending++
	s.g.Go(func() error {
		// Known as the Manager's own, so that the stack of a hook that
		// added this member does not show it as the hook's own goroutine.
		gid := goid()
		s.r.m.mu.Lock()
		s.r.members[gid] = true
		s.r.m.mu.Unlock()
		s.r.runHook(e)
		s.r.m.mu.Lock()
		s.pending--
		delete(s.r.members, gid)
		s.r.m.mu.Unlock()
		return nil
	})
}

// runner runs the hooks of one shutdown (DESIGN steps 5 and 6).
type runner struct {
	m        *Manager
	start    time.Time       // the shutdown's start
	end      time.Time       // the budget's end
	budget   context.Context // done at the budget's end
	cancel   context.CancelFunc
	waitFor  []*component    // running when hooks began: what AfterRun hooks wait for
	members  map[uint64]bool // goroutine ids of the errgroup goroutines running set members; guarded by m.mu
	captures atomic.Int32
}

func newRunner(m *Manager, start time.Time) *runner {
	r := &runner{m: m, start: start, end: start.Add(m.cfg.timeout), members: make(map[uint64]bool)}
	r.budget, r.cancel = context.WithDeadline(context.Background(), r.end)
	m.mu.Lock()
	m.state = hooking
	for _, c := range m.comps {
		if !c.returned() {
			r.waitFor = append(r.waitFor, c)
		}
	}
	m.mu.Unlock()
	return r
}

func (r *runner) stop() { r.cancel() }

// runHooks pops and runs hooks until none is left, then marks the Manager
// finished under the same lock, so a late Add either runs or is refused.
func (r *runner) runHooks() {
	m := r.m
	for {
		m.mu.Lock()
		n := len(m.steps)
		if n == 0 {
			m.state = finished
			m.mu.Unlock()
			return
		}
		st := m.steps[n-1]
		m.steps[n-1] = nil
		m.steps = m.steps[:n-1]
		switch st := st.(type) {
		case entry:
			m.mu.Unlock()
			r.runHook(st)
		case *hookSet:
			st.r, m.live = r, st
			for _, e := range st.members {
				st.join(e)
			}
			m.mu.Unlock()
			st.g.Wait()
			m.mu.Lock()
			m.live = nil
			m.mu.Unlock()
		}
	}
}

// margin is how long before its bound a hook's context ends:
// min(10% of the bound, 250ms).
func margin(bound time.Duration) time.Duration { return min(bound/10, 250*time.Millisecond) }

// runHook runs one hook on a goroutine of its own, started now, until it
// returns or its bound passes, and records the outcome. Every hook takes
// this one path.
func (r *runner) runHook(e entry) {
	m := r.m
	waited := ""
	if e.afterRun {
		waited = r.awaitComponents()
	}
	t := &task{name: e.name, kind: isHook, start: time.Now()}
	if !t.start.Before(r.end) {
		herr := &HookError{Name: e.name, Err: ErrSkipped, outcome: skipped, limit: m.cfg.timeout, byBudget: true, waited: waited}
		r.record(t, e.set, herr, t.start, m.cfg.timeout)
		return
	}
	bound, limit, byBudget := r.end, m.cfg.timeout, true
	if e.timeout > 0 && t.start.Add(e.timeout).Before(r.end) {
		bound, limit, byBudget = t.start.Add(e.timeout), e.timeout, false
	}
	ctx, cancel := context.WithDeadline(context.Background(), bound.Add(-margin(limit)))
	defer cancel()
	m.mu.Lock()
	m.running = append(m.running, t)
	m.mu.Unlock()
	m.log(slog.LevelDebug, "shutdown: hook started", slog.String("hook", e.name))

	out := make(chan result, 1) // buffered: an abandoned hook can still send
	go t.run(func() error { return e.hook(ctx) }, func(res result) {
		// Matched here, on the hook's goroutine: errors.Is calls the
		// user's methods, which must not hold the goroutine keeping time.
		// A clean stop first: an error cleared so is no timeout either.
		if !res.panic && cleanStop(res.err) {
			res.err = nil // a signal's cause, from any Manager: a clean stop
		}
		res.timeout = !res.panic && ctx.Err() != nil && is(res.err, context.DeadlineExceeded)
		// No longer running, even if abandoned already: a second signal's
		// record lists only the hooks that are still stuck.
		m.mu.Lock()
		m.running = slices.DeleteFunc(m.running, func(rt *task) bool { return rt == t })
		m.mu.Unlock()
		out <- res
	})
	timer := time.NewTimer(bound.Sub(t.start))
	defer timer.Stop()
	var herr *HookError
	select {
	case res := <-out:
		end := time.Now()
		herr = t.hookError(res, end)
		if res.timeout {
			herr.outcome = timedOut
		}
	case <-timer.C:
		// Abandoned: its goroutine keeps running, and stays listed as
		// running for a second signal's record until it returns.
		herr = &HookError{Name: e.name, Err: ErrTimeout, outcome: timedOut, Stack: r.capture(t)[t]}
	}
	if herr != nil {
		herr.limit, herr.byBudget = limit, byBudget
	}
	r.record(t, e.set, herr, time.Now(), bound.Sub(t.start))
}

// maxCaptures caps the stack captures of one shutdown: each stops the world
// while it formats every goroutine's stack, time beyond the budget.
const maxCaptures = 4

func (r *runner) capture(ts ...*task) map[*task][]byte {
	if r.captures.Add(1) > maxCaptures {
		return nil
	}
	return stacks(r.m.ownGoroutines(r), ts...)
}

// ownGoroutines returns the ids of the goroutines that run this Manager's
// hooks, components and set members: a hook's stack does not follow its
// descendants into them (a member it added, say). Goroutines of another
// Manager that a hook waits for are followed.
func (m *Manager) ownGoroutines(r *runner) map[uint64]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	own := make(map[uint64]bool)
	for _, t := range m.running {
		own[t.gid.Load()] = true
	}
	for _, c := range m.comps {
		own[c.gid.Load()] = true
	}
	if r != nil {
		for id := range r.members {
			own[id] = true
		}
	}
	return own
}

// record stores a hook's end, its report row and its error, and logs it;
// limit is the time the hook had, for the warning near its bound.
func (r *runner) record(t *task, set string, herr *HookError, end time.Time, limit time.Duration) {
	row := HookReport{Name: t.name, Set: set, Start: t.start.Sub(r.start), Elapsed: end.Sub(t.start), Outcome: "ok"}
	if herr != nil {
		if herr.outcome != skipped {
			herr.Elapsed = row.Elapsed
		}
		row.Outcome, row.Err = herr.outcome.String(), herr
	}
	r.m.mu.Lock()
	r.m.rows = append(r.m.rows, row)
	if herr != nil {
		r.m.hookErrs = append(r.m.hookErrs, herr)
	}
	r.m.mu.Unlock()
	r.m.logEnd(t, herr, row.Elapsed, limit)
}

// logEnd logs how a hook or component ended: Error for a failure, Warn for
// a hook that used 80% or more of its bound, Info otherwise.
func (m *Manager) logEnd(t *task, herr *HookError, elapsed, limit time.Duration) {
	who := slog.String(t.kind.key(), t.name)
	switch {
	case herr != nil:
		attrs := []slog.Attr{who, slog.Duration("elapsed", elapsed), slog.String("outcome", herr.outcome.String()), slog.Any("error", herr)}
		if len(herr.Stack) > 0 {
			attrs = append(attrs, slog.String("stack", string(herr.Stack)))
		}
		msg := "shutdown: " + t.kind.key() + " failed"
		if herr.outcome == skipped {
			msg = "shutdown: hook skipped"
		}
		m.log(slog.LevelError, msg, attrs...)
	case limit > 0 && elapsed >= limit/5*4:
		// Close to its bound: the next deploy may cross it.
		m.log(slog.LevelWarn, "shutdown: hook finished close to its bound", who,
			slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"), slog.Duration("bound", limit))
	default:
		m.log(slog.LevelInfo, "shutdown: "+t.kind.key()+" finished", who, slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"))
	}
}
