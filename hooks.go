package shutdown

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"golang.org/x/sync/errgroup"
)

// A Hook is one cleanup step: close a file, drain a server, flush a buffer.
// It must return once ctx is done; ctx's deadline is a little before the
// hook's bound (see [Timeout]), so a hook that reacts to it can still finish
// a forceful fallback, such as Close, in time. A hook that does not return by
// its bound is abandoned: its goroutine keeps running beside the hooks after
// it, and the hook is reported as [ErrTimeout].
type Hook func(ctx context.Context) error

// A HookOption configures one hook in [Manager.Add].
type HookOption interface {
	applyHook(*entry)
	String() string
}

type hookTimeout time.Duration

// Timeout bounds one hook: it is abandoned when d has passed since its own
// start, or at the end of the budget, whichever comes first. Its context's
// deadline is that bound less min(10% of it, 250ms). Without Timeout, a hook
// may use all of the budget that remains. Timeout panics if d is not
// positive.
func Timeout(d time.Duration) HookOption {
	if d <= 0 {
		panic(fmt.Sprintf("shutdown: Timeout: d must be positive, got %v", d))
	}
	return hookTimeout(d)
}

func (o hookTimeout) applyHook(e *entry) { e.timeout = time.Duration(o) }
func (o hookTimeout) String() string     { return fmt.Sprintf("shutdown.Timeout(%v)", time.Duration(o)) }

type afterRun struct{}

// AfterRun makes a hook start only after [Manager.Run]'s function has
// returned (and every hook before it has ended), so a flush never races the
// writer it flushes. Register in the natural order: the database first, with
// AfterRun, then the server that uses it; the server's hook runs first, which
// makes fn return, and then the database closes.
//
// The other order deadlocks until the budget ends: an AfterRun hook that runs
// before the hook that makes fn return waits for fn, which waits for that
// later hook. If Run was not called when hooks start, AfterRun hooks do not
// wait.
func AfterRun() HookOption { return afterRun{} }

func (afterRun) applyHook(e *entry) { e.afterRun = true }
func (afterRun) String() string     { return "shutdown.AfterRun()" }

type concurrent string

// Concurrent puts a hook into the named set: the hooks of one set run at the
// same time, through an [errgroup.Group], and the set takes the place of its
// first-added member in the last-added-first order. The hooks that run before
// the set end before any member starts; the hooks after it start only when
// every member has ended or been abandoned. One member's failure cancels no
// other, and each member reports its own error. [Timeout] and [AfterRun]
// apply to each member on its own. Concurrent panics if set is empty.
func Concurrent(set string) HookOption {
	if set == "" {
		panic("shutdown: Concurrent: set is empty")
	}
	return concurrent(set)
}

func (o concurrent) applyHook(e *entry) { e.set = string(o) }
func (o concurrent) String() string     { return fmt.Sprintf("shutdown.Concurrent(%q)", string(o)) }

// entry is one registered hook, or, with members set, a Concurrent set.
type entry struct {
	name     string
	hook     Hook
	timeout  time.Duration
	afterRun bool
	set      string
	members  []entry
}

// Add registers h under name. Hooks run in reverse order of registration
// (last added, first run), like deferred calls, one at a time, unless
// [Concurrent] groups them; see [Timeout] and [AfterRun] for the other
// options. The name appears in logs and in the [*HookError] of a failed hook.
//
// Add may be called at any time. Before hooks start (during the drain delay,
// say) it is an ordinary Add. Once hooks are running, h runs next: after the
// hook now running and before any not yet started, as the last added hook
// should; a hook whose Concurrent set is running joins it. Once the last hook
// has ended, h is not run and an error record naming it is logged. Add panics
// if name is empty or h is nil; it never panics for being late.
func (m *Manager) Add(name string, h Hook, opts ...HookOption) {
	if name == "" {
		panic("shutdown: Add: name is empty")
	}
	if h == nil {
		panic(fmt.Sprintf("shutdown: Add(%q): hook is nil", name))
	}
	e := entry{name: name, hook: h}
	for _, o := range opts {
		o.applyHook(&e)
	}
	m.mu.Lock()
	switch {
	case m.state == finished:
		m.mu.Unlock()
		m.log(slog.LevelError, "shutdown: hook added after shutdown finished; not run", slog.String("hook", name))
		return
	case e.set == "":
		m.stack = append(m.stack, e)
	case m.live != nil && m.live.name == e.set && m.live.pending > 0:
		// The set is running: join it. pending > 0 means a member has not
		// returned to the errgroup yet, so Go never races Wait.
		s := m.live
		s.pending++
		s.g.Go(func() error { s.r.runMember(s, e); return nil })
	default:
		if i, ok := m.sets[e.set]; ok {
			m.stack[i].members = append(m.stack[i].members, e)
		} else {
			if m.sets == nil {
				m.sets = make(map[string]int)
			}
			m.sets[e.set] = len(m.stack)
			m.stack = append(m.stack, entry{name: e.set, set: e.set, members: []entry{e}})
		}
	}
	m.mu.Unlock()
}

// running is a hook that has started and not ended, for the second
// signal's log record.
type running struct {
	id    uint64
	name  string
	start time.Time
}

// runningSet is the Concurrent set whose members are running.
type runningSet struct {
	name    string
	r       *runner
	g       errgroup.Group // zero Group, not WithContext: one failure cancels no sibling
	pending int            // members not yet ended; guarded by Manager.mu
}

// result is what a hook's goroutine reports.
type result struct {
	err      error
	stack    []byte
	panicked bool
	goexit   bool // the goroutine is gone (runtime.Goexit)
}

type job struct {
	ctx context.Context
	h   Hook
}

// worker is a goroutine reused from hook to hook, so a hook costs a channel
// round trip rather than a goroutine. After an abandonment the runner starts
// a new one: the old one is still inside the stuck hook.
type worker struct {
	jobs    chan job
	results chan result
}

func (w *worker) loop() {
	for j := range w.jobs {
		if !runJob(j.ctx, j.h, w.results) {
			return
		}
	}
}

var errGoexit = errors.New("shutdown: hook called runtime.Goexit")

// runJob calls h and sends its result on out, which must have room for it.
// Panics are recovered here (errgroup does not recover them): one panicking
// hook must not stop the others from running during exit. It reports
// whether h returned normally or panicked; on runtime.Goexit it sends a
// result and the goroutine ends.
func runJob(ctx context.Context, h Hook, out chan<- result) (alive bool) {
	normal := false
	defer func() {
		if normal {
			return
		}
		if v := recover(); v != nil {
			err, ok := v.(error)
			if !ok {
				err = fmt.Errorf("%v", v)
			}
			out <- result{err: err, panicked: true, stack: debug.Stack()}
			alive = true
			return
		}
		out <- result{err: errGoexit, goexit: true}
	}()
	err := h(ctx)
	normal = true
	out <- result{err: err}
	return true
}

// runner runs the hooks of one shutdown (steps 5 and 6).
type runner struct {
	m          *Manager
	budgetEnd  time.Time
	budgetOver chan struct{} // closed at the end of the budget
	budgetT    *time.Timer
	shared     context.Context // for hooks whose bound is the budget's end
	cancel     context.CancelFunc
	waitFn     bool // Run was called before hooks started: AfterRun waits
	w          *worker
	nextID     uint64
}

func newRunner(m *Manager, budgetEnd time.Time) *runner {
	r := &runner{m: m, budgetEnd: budgetEnd, budgetOver: make(chan struct{})}
	r.budgetT = time.AfterFunc(time.Until(budgetEnd), func() { close(r.budgetOver) })
	r.shared, r.cancel = context.WithDeadline(context.Background(), budgetEnd.Add(-margin(m.cfg.timeout)))
	m.mu.Lock()
	m.state = hooking
	r.waitFn = m.runState != runNone
	m.mu.Unlock()
	return r
}

// margin is how long before its bound a hook's context ends:
// min(10% of the bound, 250ms).
func margin(bound time.Duration) time.Duration { return min(bound/10, 250*time.Millisecond) }

func (r *runner) over() bool {
	select {
	case <-r.budgetOver:
		return true
	default:
		return false
	}
}

// run pops and runs hooks until none is left, then marks the manager
// finished under the same lock, so a late Add either runs or is refused.
func (r *runner) run() {
	m := r.m
	for {
		m.mu.Lock()
		n := len(m.stack)
		if n == 0 {
			m.state = finished
			m.mu.Unlock()
			return
		}
		e := m.stack[n-1]
		m.stack[n-1] = entry{}
		m.stack = m.stack[:n-1]
		var s *runningSet
		if e.members != nil {
			delete(m.sets, e.set)
			s = r.startSet(e)
		}
		m.mu.Unlock()
		if s == nil {
			r.runHook(e, true)
			continue
		}
		s.g.Wait()
		m.mu.Lock()
		m.live = nil
		m.mu.Unlock()
	}
}

// startSet starts the members of a set; the caller holds m.mu.
func (r *runner) startSet(e entry) *runningSet {
	s := &runningSet{name: e.set, r: r, pending: len(e.members)}
	r.m.live = s
	for _, mem := range e.members {
		s.g.Go(func() error { r.runMember(s, mem); return nil })
	}
	return s
}

func (r *runner) runMember(s *runningSet, e entry) {
	r.runHook(e, false)
	r.m.mu.Lock()
	s.pending--
	r.m.mu.Unlock()
}

// runHook runs one hook to its end, its abandonment or its skipping, and
// records the outcome. onWorker says whether to use the reused worker
// goroutine (serial hooks) or a goroutine of its own (set members).
func (r *runner) runHook(e entry, onWorker bool) {
	m := r.m
	if e.afterRun && r.waitFn {
		select {
		case <-m.fnDone:
		case <-r.budgetOver:
		}
	}
	if r.over() {
		r.finish(e, 0, &HookError{Name: e.name, Err: ErrSkipped, kind: kindSkipped, limit: m.cfg.timeout}, 0, 0)
		return
	}
	start := time.Now()
	ctx, abandon, limit := r.shared, (<-chan struct{})(r.budgetOver), m.cfg.timeout
	byBudget := true
	if e.timeout > 0 && start.Add(e.timeout).Before(r.budgetEnd) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.Background(), start.Add(e.timeout-margin(e.timeout)))
		defer cancel()
		c := make(chan struct{})
		t := time.AfterFunc(e.timeout, func() { close(c) })
		defer t.Stop()
		abandon, limit, byBudget = c, e.timeout, false
	}
	m.mu.Lock()
	r.nextID++
	id := r.nextID
	m.running = append(m.running, running{id: id, name: e.name, start: start})
	m.mu.Unlock()
	if m.logEnabled(slog.LevelDebug) {
		m.log(slog.LevelDebug, "shutdown: hook started", slog.String("hook", e.name))
	}

	var res result
	abandoned := false
	if onWorker {
		if r.w == nil {
			r.w = &worker{jobs: make(chan job, 1), results: make(chan result, 1)}
			go r.w.loop()
		}
		r.w.jobs <- job{ctx, e.hook}
		select {
		case res = <-r.w.results:
			if res.goexit {
				r.w = nil
			}
		case <-abandon:
			close(r.w.jobs) // the worker ends once the stuck hook returns
			r.w, abandoned = nil, true
		}
	} else {
		out := make(chan result, 1) // buffered: an abandoned hook can still send
		go runJob(ctx, e.hook, out)
		select {
		case res = <-out:
		case <-abandon:
			abandoned = true
		}
	}
	elapsed := time.Since(start)

	var herr *HookError
	switch {
	case abandoned:
		herr = &HookError{Name: e.name, Err: ErrTimeout, kind: kindTimeout}
	case res.panicked:
		herr = &HookError{Name: e.name, Err: res.err, Stack: res.stack, kind: kindPanic}
	case res.err != nil && ctx.Err() != nil && errors.Is(res.err, context.DeadlineExceeded):
		herr = &HookError{Name: e.name, Err: res.err, kind: kindTimeout}
	case res.err != nil:
		herr = &HookError{Name: e.name, Err: res.err, kind: kindFailed}
	}
	if herr != nil {
		herr.Elapsed, herr.limit, herr.byBudget = elapsed, limit, byBudget
	}
	if !abandoned {
		id = 0 // still running if abandoned: keep it listed
	}
	r.finish(e, id, herr, elapsed, limit)
}

// finish records a hook's end: the error, the log record, and its removal
// from the running list (id 0 leaves it listed).
func (r *runner) finish(e entry, id uint64, herr *HookError, elapsed, limit time.Duration) {
	m := r.m
	m.mu.Lock()
	if id != 0 {
		for i := range m.running {
			if m.running[i].id == id {
				m.running = append(m.running[:i], m.running[i+1:]...)
				break
			}
		}
	}
	if herr != nil {
		m.hookErrs = append(m.hookErrs, herr)
	}
	m.mu.Unlock()
	switch {
	case herr != nil:
		m.log(slog.LevelError, "shutdown: hook failed", slog.String("hook", e.name),
			slog.Duration("elapsed", elapsed), slog.String("outcome", herr.kind.String()), slog.String("error", herr.Error()))
	case elapsed >= limit/5*4:
		// Close to its bound: the next deploy may cross it.
		m.log(slog.LevelWarn, "shutdown: hook finished close to its bound", slog.String("hook", e.name),
			slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"), slog.Duration("bound", limit))
	case m.logEnabled(slog.LevelInfo):
		m.log(slog.LevelInfo, "shutdown: hook finished", slog.String("hook", e.name),
			slog.Duration("elapsed", elapsed), slog.String("outcome", "ok"))
	}
}

// ErrTimeout, ErrPanic and ErrSkipped classify a [*HookError]; match them
// with [errors.Is] on the error that [Manager.Wait] or [Manager.Run] returns.
var (
	// ErrTimeout reports a hook (or Run's function) that was still running
	// at its bound and was abandoned, or that returned
	// context.DeadlineExceeded after its context's deadline.
	ErrTimeout = errors.New("shutdown: timed out")
	// ErrPanic reports a hook (or Run's function) that panicked; the
	// HookError's Stack holds where.
	ErrPanic = errors.New("shutdown: panic")
	// ErrSkipped reports a hook that was not started because the budget was
	// spent before its turn came.
	ErrSkipped = errors.New("shutdown: skipped")
)

type hookKind int

const (
	kindFailed hookKind = iota
	kindTimeout
	kindPanic
	kindSkipped
)

func (k hookKind) String() string {
	return [...]string{"failed", "timeout", "panic", "skipped"}[k]
}

// HookError reports one hook that failed, timed out, panicked or was
// skipped. Run's function is reported as a HookError named "run" when it
// panics or outlives the budget.
type HookError struct {
	Name    string        // the name given to Add, or "run"
	Elapsed time.Duration // how long the hook ran before it ended or was abandoned
	Err     error         // the hook's error, the panic value, or ErrTimeout/ErrSkipped
	Stack   []byte        // where a panicking hook panicked

	kind     hookKind
	limit    time.Duration // the bound that cut the hook off
	byBudget bool          // that bound was the total budget
}

// Error names the hook and the bound that cut it off, never a measured time,
// for example `shutdown: hook "db": timed out after 5s`.
func (e *HookError) Error() string {
	who := fmt.Sprintf("shutdown: hook %q", e.Name)
	switch e.kind {
	case kindTimeout:
		s := fmt.Sprintf("%s: timed out after %v", who, e.limit)
		if e.byBudget {
			s = fmt.Sprintf("%s: timed out after the %v budget", who, e.limit)
		}
		if e.Err != ErrTimeout && e.Err != context.DeadlineExceeded {
			s += ": " + e.Err.Error()
		}
		return s
	case kindPanic:
		return fmt.Sprintf("%s: panic: %v", who, e.Err)
	case kindSkipped:
		return fmt.Sprintf("%s: skipped: the %v budget was spent", who, e.limit)
	}
	return fmt.Sprintf("%s: %v", who, e.Err)
}

// Unwrap returns the hook's own error, so errors.Is and errors.As reach it.
func (e *HookError) Unwrap() error { return e.Err }

// Is reports whether e is of the class target names: [ErrTimeout],
// [ErrPanic] or [ErrSkipped].
func (e *HookError) Is(target error) bool {
	switch target {
	case ErrTimeout:
		return e.kind == kindTimeout
	case ErrPanic:
		return e.kind == kindPanic
	case ErrSkipped:
		return e.kind == kindSkipped
	}
	return false
}

// Closer adapts c to a Hook that calls c.Close. It panics if c is nil.
func Closer(c io.Closer) Hook {
	if c == nil {
		panic("shutdown: Closer: c is nil")
	}
	return func(context.Context) error { return c.Close() }
}

// stop releases the runner's timer, context and worker goroutine.
func (r *runner) stop() {
	r.budgetT.Stop()
	r.cancel()
	if r.w != nil {
		close(r.w.jobs)
		r.w = nil
	}
}
