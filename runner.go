package shutdown

// This file runs the hooks of one shutdown: the order, the worker goroutine,
// the bounds, abandonment, and what is recorded and logged for each hook.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// running is a hook that has started and not ended, for the second
// signal's log record.
type running struct {
	id    uint64
	name  string
	start time.Time
	label string // its goroutine's pprof label
}

// runningSet is the Concurrent set whose members are running.
type runningSet struct {
	name    string
	r       *runner
	g       errgroup.Group // zero Group, not WithContext: one failure cancels no sibling
	pending int            // members not yet ended; guarded by Manager.mu
}

// join starts e as one more member; the caller holds Manager.mu. It is a
// method of its own so that the closure's copy of e does not move every
// Add's entry to the heap.
func (s *runningSet) join(e entry) {
	s.pending++
	s.g.Go(func() error { s.r.runMember(s, e); return nil })
}

// result is what a hook's goroutine reports.
type result struct {
	err      error
	stack    []byte
	panicked bool
	goexit   bool // the goroutine is gone (runtime.Goexit)
}

// job is one unit of work for the worker: either one hook under the
// runner's watch (ctx, h), or, with batch set, a run of plain hooks that the
// worker pops from the stack itself.
type job struct {
	ctx     context.Context
	h       Hook
	batch   entry
	isBatch bool
}

// worker is a goroutine reused from hook to hook. Plain hooks (no Timeout,
// no set, nothing to wait for) run back to back on it, each popped under the
// lock, with no round trip to the runner; that is what keeps a hook well
// under a microsecond. The runner watches only the end of the budget. After
// an abandonment the runner starts a new worker: the old one is still inside
// the stuck hook, and it ends, without recording anything, if the hook ever
// returns.
type worker struct {
	jobs    chan job
	results chan result
	label   string // its goroutine's pprof label, to find its stack

	// Guarded by Manager.mu.
	abandoned bool
	cur       entry     // the batch hook now running
	curStart  time.Time // its start
	curID     uint64    // its id in Manager.running; 0 between hooks
}

func (r *runner) newWorker() *worker {
	w := &worker{jobs: make(chan job, 1), results: make(chan result, 1), label: newLabel()}
	go r.loop(w)
	return w
}

func (r *runner) loop(w *worker) {
	setLabel(w.label)
	for j := range w.jobs {
		var ok bool
		if j.isBatch {
			ok = r.batch(w, j.batch)
		} else {
			ok = runJob(j.ctx, j.h, w.results)
		}
		if !ok {
			return
		}
	}
}

// errGoexit is the Err of a hook (or fn) that called runtime.Goexit; it is
// always wrapped in a HookError, which names the hook.
var errGoexit = errors.New("called runtime.Goexit")

// runJob calls h and sends its result on out, which must have room for it.
// It reports whether the goroutine is still alive: on runtime.Goexit in h,
// the deferred send still reports it, and the goroutine ends.
func runJob(ctx context.Context, h Hook, out chan<- result) bool {
	sent := false
	defer func() {
		if !sent {
			out <- result{err: errGoexit, goexit: true}
		}
	}()
	res := call(ctx, h)
	sent = true
	out <- res
	return true
}

// runLabelled is runJob on a goroutine of its own, labelled so that its
// stack can be found if it is abandoned.
func runLabelled(label string, ctx context.Context, h Hook, out chan<- result) {
	setLabel(label)
	runJob(ctx, h, out)
}

// call calls h and recovers a panic. DESIGN chose recovering over
// errgroup's stance (which does not recover): one panicking hook must not
// stop the others from running during exit. runtime.Goexit is not
// recoverable; call's callers report it from a deferred function.
func call(ctx context.Context, h Hook) (res result) {
	defer func() {
		if v := recover(); v != nil {
			err, ok := v.(error)
			if !ok {
				err = fmt.Errorf("%v", v)
			}
			res = result{err: err, panicked: true, stack: debug.Stack()}
		}
	}()
	return result{err: h(ctx)}
}

// runner runs the hooks of one shutdown (DESIGN steps 5 and 6).
type runner struct {
	m          *Manager
	start      time.Time // the shutdown's start, for the report's offsets
	budgetEnd  time.Time
	budgetOver chan struct{} // closed at the end of the budget
	budgetT    *time.Timer
	shared     context.Context // for hooks whose bound is the budget's end
	cancel     context.CancelFunc
	waitFn     bool        // Run was called before hooks started: AfterRun waits
	w          *worker     // used by the runner goroutine only
	hookT      *time.Timer // the bound of serial hooks with Timeout; runner goroutine only
	nextID     uint64      // guarded by Manager.mu
	captures   atomic.Int32
}

func newRunner(m *Manager, start, budgetEnd time.Time) *runner {
	r := &runner{m: m, start: start, budgetEnd: budgetEnd, budgetOver: make(chan struct{})}
	r.budgetT = time.AfterFunc(time.Until(budgetEnd), func() { close(r.budgetOver) })
	// Hooks bounded by the budget share one context. Its deadline is the
	// budget's end less min(10% of the budget, 250ms): one context for all
	// of them, rather than one per hook, is part of what keeps hooks cheap.
	r.shared, r.cancel = context.WithDeadline(context.Background(), budgetEnd.Add(-margin(m.cfg.timeout)))
	m.mu.Lock()
	m.state = hooking
	r.waitFn = m.runState != runNone
	m.rows = make([]HookReport, 0, len(m.stack)) // one row per hook, allocated once
	m.mu.Unlock()
	return r
}

// margin is how long before its bound a hook's context ends:
// min(10% of the bound, 250ms).
func margin(bound time.Duration) time.Duration { return min(bound/10, 250*time.Millisecond) }

func (r *runner) over(now time.Time) bool {
	// The clock first: the timer that closes budgetOver runs on a goroutine
	// of its own and may lag behind it, and a hook reached at the budget's
	// end must be skipped, not started with its context already done.
	if !now.Before(r.budgetEnd) {
		return true
	}
	select {
	case <-r.budgetOver:
		return true
	default:
		return false
	}
}

// plain reports whether e can run in a batch on the worker: a single hook
// bounded by the budget alone, with nothing to wait for. The caller holds
// m.mu.
func (r *runner) plain(e *entry) bool {
	if e.hook == nil || e.timeout > 0 {
		return false
	}
	if e.afterRun && r.waitFn && r.m.runState == runActive {
		return false
	}
	return true
}

// startRunning lists a hook as running, for the second signal's log
// record, and returns its id. The caller holds m.mu.
func (r *runner) startRunning(name string, start time.Time, label string) uint64 {
	r.nextID++
	r.m.running = append(r.m.running, running{id: r.nextID, name: name, start: start, label: label})
	return r.nextID
}

// pop removes the next entry from the stack. The caller holds m.mu.
func (m *Manager) pop() entry {
	n := len(m.stack)
	e := m.stack[n-1]
	m.stack[n-1] = entry{}
	m.stack = m.stack[:n-1]
	return e
}

// run pops and runs hooks until none is left, then marks the manager
// finished under the same lock, so a late Add either runs or is refused.
func (r *runner) run() {
	m := r.m
	for {
		m.mu.Lock()
		if len(m.stack) == 0 {
			m.state = finished
			m.mu.Unlock()
			return
		}
		e := m.pop()
		now := time.Now()
		switch {
		case e.hook == nil:
			delete(m.sets, e.name)
			s := r.startSet(e)
			m.mu.Unlock()
			s.g.Wait()
			m.mu.Lock()
			m.live = nil
			m.mu.Unlock()
		case r.plain(&e) && !r.over(now):
			if r.w == nil {
				r.w = r.newWorker()
			}
			w := r.w
			start := now
			w.cur, w.curStart, w.curID = e, start, r.startRunning(e.name, start, w.label)
			m.mu.Unlock()
			r.logStart(e.name)
			r.watchBatch(w, e)
		default:
			m.mu.Unlock()
			r.runHook(e, true, "")
		}
	}
}

// watchBatch hands a batch to the worker and waits for it to end, or for
// the budget to end, when the hook the worker is in is abandoned.
func (r *runner) watchBatch(w *worker, e entry) {
	m := r.m
	w.jobs <- job{batch: e, isBatch: true}
	select {
	case res := <-w.results:
		if res.goexit { // reported by batch; the goroutine is gone
			r.w = nil
		}
	case <-r.budgetOver:
		m.mu.Lock()
		w.abandoned = true
		cur, start, id := w.cur, w.curStart, w.curID
		m.mu.Unlock()
		close(w.jobs)
		r.w = nil
		if id != 0 {
			herr := &HookError{Name: cur.name, Err: ErrTimeout, kind: kindTimeout, limit: m.cfg.timeout, byBudget: true}
			r.abandon(herr, w.label)
			r.finish(0, cur.name, "", herr, start, m.cfg.timeout)
		}
	}
}

// batch runs e, then every plain hook on top of the stack, on the worker
// goroutine. It ends when the next entry is not plain (the runner takes it)
// or the runner has abandoned the worker. It reports whether the goroutine
// is still alive.
func (r *runner) batch(w *worker, e entry) bool {
	m := r.m
	done := false
	defer func() {
		if done {
			return
		}
		// runtime.Goexit in a hook: report it; the runner starts a new worker.
		end := time.Now()
		m.mu.Lock()
		if w.abandoned {
			m.mu.Unlock()
			return
		}
		cur, start, id := w.cur, w.curStart, w.curID
		w.cur, w.curID = entry{}, 0
		herr := &HookError{Name: cur.name, Elapsed: end.Sub(start), Err: errGoexit, kind: kindFailed}
		r.record(id, r.row(cur.name, "", start, end, herr))
		m.mu.Unlock()
		r.logEnd(cur.name, herr, end.Sub(start), m.cfg.timeout)
		w.results <- result{goexit: true}
	}()
	for {
		res := call(r.shared, e.hook)
		end := time.Now()
		start := w.curStart // written by this goroutine or before the job was sent
		herr := r.classify(e.name, res, r.shared, end.Sub(start), m.cfg.timeout, true)
		m.mu.Lock()
		if w.abandoned { // the runner reported this hook already
			m.mu.Unlock()
			done = true
			return false
		}
		id := w.curID
		next := len(m.stack) > 0 && r.plain(&m.stack[len(m.stack)-1]) && !r.over(end)
		var nextEntry entry
		if next {
			nextEntry = m.pop()
			w.cur, w.curStart = nextEntry, end
			w.curID = r.startRunning(nextEntry.name, end, w.label)
		} else {
			w.cur, w.curID = entry{}, 0
		}
		r.record(id, r.row(e.name, "", start, end, herr))
		m.mu.Unlock()
		r.logEnd(e.name, herr, end.Sub(start), m.cfg.timeout)
		if !next {
			done = true
			w.results <- result{}
			return true
		}
		r.logStart(nextEntry.name)
		e = nextEntry
	}
}

// startSet starts the members of a set; the caller holds m.mu.
func (r *runner) startSet(e entry) *runningSet {
	s := &runningSet{name: e.name, r: r, pending: len(e.set.hooks)}
	r.m.live = s
	for _, mem := range e.set.hooks {
		s.g.Go(func() error { r.runMember(s, mem); return nil })
	}
	return s
}

func (r *runner) runMember(s *runningSet, e entry) {
	r.runHook(e, false, s.name)
	r.m.mu.Lock()
	s.pending--
	r.m.mu.Unlock()
}

// runHook runs one hook that is not plain to its end, its abandonment or
// its skipping, and records the outcome. onWorker says whether to use the
// reused worker goroutine (serial hooks) or a goroutine of its own (set
// members, whose set is named by set).
func (r *runner) runHook(e entry, onWorker bool, set string) {
	m := r.m
	waitedRun := false
	if e.afterRun && r.waitFn {
		select {
		case <-m.fnDone:
		case <-r.budgetOver:
			// Both may be ready (an earlier hook used up the budget after
			// fn returned): only a hook still waiting for fn says so.
			select {
			case <-m.fnDone:
			default:
				waitedRun = true
			}
		}
	}
	start := time.Now()
	if r.over(start) {
		herr := &HookError{Name: e.name, Err: ErrSkipped, kind: kindSkipped, limit: m.cfg.timeout, waitedRun: waitedRun}
		r.finish(0, e.name, set, herr, start, 0)
		return
	}
	ctx, limit, byBudget := r.shared, m.cfg.timeout, true
	var bound <-chan time.Time // the hook's own bound, when it comes before the budget's end
	if e.timeout > 0 && start.Add(e.timeout).Before(r.budgetEnd) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.Background(), start.Add(e.timeout-margin(e.timeout)))
		defer cancel()
		var t *time.Timer
		if onWorker { // serial hooks reuse one timer
			if r.hookT == nil {
				r.hookT = time.NewTimer(e.timeout)
			} else {
				r.hookT.Reset(e.timeout)
			}
			t = r.hookT
		} else {
			t = time.NewTimer(e.timeout)
		}
		defer t.Stop()
		bound, limit, byBudget = t.C, e.timeout, false
	}
	var label string
	var out chan result
	if onWorker {
		if r.w == nil {
			r.w = r.newWorker()
		}
		label, out = r.w.label, r.w.results
	} else {
		label, out = newLabel(), make(chan result, 1) // buffered: an abandoned hook can still send
	}
	m.mu.Lock()
	id := r.startRunning(e.name, start, label)
	m.mu.Unlock()
	r.logStart(e.name)

	if onWorker {
		r.w.jobs <- job{ctx: ctx, h: e.hook}
	} else {
		go runLabelled(label, ctx, e.hook, out)
	}
	var herr *HookError
	abandoned := false
	select {
	case res := <-out:
		if res.goexit && onWorker {
			r.w = nil
		}
		herr = r.classify(e.name, res, ctx, time.Since(start), limit, byBudget)
	case <-bound:
		abandoned = true
	case <-r.budgetOver:
		abandoned = true
	}
	if abandoned {
		if onWorker {
			close(r.w.jobs) // the worker ends once the stuck hook returns
			r.w = nil
		}
		herr = &HookError{Name: e.name, Err: ErrTimeout, kind: kindTimeout, limit: limit, byBudget: byBudget}
		r.abandon(herr, label)
		id = 0 // still running: keep it listed
	}
	r.finish(id, e.name, set, herr, start, limit)
}

// maxCaptures caps the stack captures of one shutdown: each takes a
// goroutine profile, which stops the world for a moment and costs time
// beyond the hook's bound.
const maxCaptures = 4

// abandon fills in the stack of an abandoned hook, from the goroutine
// labelled label, while captures last.
func (r *runner) abandon(herr *HookError, label string) {
	if r.captures.Add(1) > maxCaptures {
		return
	}
	herr.Stack = stacks(label)[label]
}

// classify turns a hook's result into its error, or nil.
func (r *runner) classify(name string, res result, ctx context.Context, elapsed, limit time.Duration, byBudget bool) *HookError {
	var kind hookKind
	switch {
	case res.err == nil:
		return nil
	case res.panicked:
		kind = kindPanic
	case ctx.Err() != nil && errors.Is(res.err, context.DeadlineExceeded):
		kind = kindTimeout
	default:
		kind = kindFailed
	}
	return &HookError{Name: name, Elapsed: elapsed, Err: res.err, Stack: res.stack, kind: kind, limit: limit, byBudget: byBudget}
}

// row is a hook's line in the Report.
func (r *runner) row(name, set string, start, end time.Time, herr *HookError) HookReport {
	h := HookReport{Name: name, Set: set, Start: start.Sub(r.start), Elapsed: end.Sub(start), Outcome: "ok"}
	if herr != nil {
		h.Outcome, h.Err = herr.kind.String(), herr
	}
	return h
}

// record stores a hook's end: its report row, its error, and its removal
// from the running list (id 0 leaves it listed). The caller holds m.mu.
func (r *runner) record(id uint64, row HookReport) {
	m := r.m
	if id != 0 {
		for i := range m.running {
			if m.running[i].id == id {
				m.running = append(m.running[:i], m.running[i+1:]...)
				break
			}
		}
	}
	m.rows = append(m.rows, row)
	if row.Err != nil {
		m.hookErrs = append(m.hookErrs, row.Err)
	}
}

// finish records a hook's end, now, and logs it.
func (r *runner) finish(id uint64, name, set string, herr *HookError, start time.Time, limit time.Duration) {
	end := time.Now()
	if herr != nil && herr.kind != kindSkipped {
		herr.Elapsed = end.Sub(start)
	}
	r.m.mu.Lock()
	r.record(id, r.row(name, set, start, end, herr))
	r.m.mu.Unlock()
	r.logEnd(name, herr, end.Sub(start), limit)
}

func (r *runner) logStart(name string) {
	if r.m.logEnabled(slog.LevelDebug) {
		r.m.log(slog.LevelDebug, "shutdown: hook started", slog.String("hook", name))
	}
}

// logEnd writes a hook's end: Error for a failure, Warn for a hook that
// used 80% or more of its bound, Info otherwise.
func (r *runner) logEnd(name string, herr *HookError, elapsed, limit time.Duration) {
	m := r.m
	switch {
	case herr != nil:
		attrs := []slog.Attr{slog.String("hook", name), slog.Duration("elapsed", elapsed),
			slog.String("outcome", herr.kind.String()), slog.String("error", herr.Error())}
		if len(herr.Stack) > 0 {
			attrs = append(attrs, slog.String("stack", string(herr.Stack)))
		}
		m.log(slog.LevelError, "shutdown: hook failed", attrs...)
	case elapsed >= limit/5*4:
		// Close to its bound: the next deploy may cross it.
		m.log(slog.LevelWarn, "shutdown: hook finished close to its bound", slog.String("hook", name),
			slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"), slog.Duration("bound", limit))
	case m.logEnabled(slog.LevelInfo):
		m.log(slog.LevelInfo, "shutdown: hook finished", slog.String("hook", name),
			slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"))
	}
}

// stop releases the runner's timers, context and worker goroutine.
func (r *runner) stop() {
	r.budgetT.Stop()
	if r.hookT != nil {
		r.hookT.Stop()
	}
	r.cancel()
	if r.w != nil {
		close(r.w.jobs)
		r.w = nil
	}
}
