package shutdown

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
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
	applyHook(entry) entry // by value: a pointer through an interface would move every entry to the heap
	String() string
}

type hookTimeout time.Duration

// Timeout bounds one hook: it is abandoned when d has passed since its own
// start, or at the end of the budget, whichever comes first. Its context
// ends min(10% of d, 250ms) before that bound; when the budget's end comes
// first, the hook gets the context that hooks without Timeout share, which
// ends min(10% of the budget, 250ms) before the budget does. Without
// Timeout, a hook may use all of the budget that remains. Timeout panics if
// d is not positive.
func Timeout(d time.Duration) HookOption {
	if d <= 0 {
		panic(fmt.Sprintf("shutdown: Timeout: d must be positive, got %v", d))
	}
	return hookTimeout(d)
}

func (o hookTimeout) applyHook(e entry) entry { e.timeout = time.Duration(o); return e }
func (o hookTimeout) String() string          { return fmt.Sprintf("shutdown.Timeout(%v)", time.Duration(o)) }

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

func (afterRun) applyHook(e entry) entry { e.afterRun = true; return e }
func (afterRun) String() string          { return "shutdown.AfterRun()" }

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

func (o concurrent) applyHook(e entry) entry { e.set = &members{name: string(o)}; return e }
func (o concurrent) String() string          { return fmt.Sprintf("shutdown.Concurrent(%q)", string(o)) }

// entry is one registered hook or, with hook nil, a Concurrent set. It is
// kept small: a shutdown with many hooks copies it around.
type entry struct {
	name     string
	hook     Hook
	timeout  time.Duration
	afterRun bool
	set      *members // a member's set (in Add only), or the set itself
}

// members is a Concurrent set's name and, in the set's entry, its hooks.
type members struct {
	name  string
	hooks []entry
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
// if name is empty, h is nil or an option is nil; it never panics for being
// late.
func (m *Manager) Add(name string, h Hook, opts ...HookOption) {
	if name == "" {
		panic("shutdown: Add: name is empty")
	}
	if h == nil {
		panic(fmt.Sprintf("shutdown: Add(%q): hook is nil", name))
	}
	e := entry{name: name, hook: h}
	if len(opts) > 0 {
		e = withOptions(e, opts)
	}
	m.mu.Lock()
	switch {
	case m.state == finished:
		m.mu.Unlock()
		m.log(slog.LevelError, "shutdown: hook added after shutdown finished; not run", slog.String("hook", name))
		return
	case e.set == nil:
		m.stack = append(m.stack, e)
	case m.live != nil && m.live.name == e.set.name && m.live.pending > 0:
		// The set is running: join it. pending > 0 means a member has not
		// returned to the errgroup yet, so Go never races Wait.
		m.live.join(e)
	default:
		name := e.set.name
		e.set = nil
		if i, ok := m.sets[name]; ok {
			set := m.stack[i].set
			set.hooks = append(set.hooks, e)
		} else {
			if m.sets == nil {
				m.sets = make(map[string]int)
			}
			m.sets[name] = len(m.stack)
			m.stack = append(m.stack, entry{name: name, set: &members{name: name, hooks: []entry{e}}})
		}
	}
	m.mu.Unlock()
}

// withOptions applies opts to e.
func withOptions(e entry, opts []HookOption) entry {
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("shutdown: Add(%q): option %d is nil", e.name, i))
		}
		e = o.applyHook(e)
	}
	return e
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
// panics, calls runtime.Goexit or outlives the budget.
type HookError struct {
	Name    string        // the name given to Add, or "run"
	Elapsed time.Duration // how long the hook ran before it ended or was abandoned
	Err     error         // the hook's error, the panic value, or ErrTimeout/ErrSkipped
	Stack   []byte        // where it panicked, or where an abandoned hook is stuck (4 per shutdown at most)

	kind      hookKind
	limit     time.Duration // the bound that cut the hook off
	byBudget  bool          // that bound was the total budget
	waitedRun bool          // skipped while waiting, as AfterRun, for Run's fn
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
		if e.waitedRun {
			return fmt.Sprintf("%s: skipped: Run's function had not returned when the %v budget was spent", who, e.limit)
		}
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

// Closer adapts c to a Hook that calls c.Close. It panics if c is nil or a
// nil pointer.
func Closer(c io.Closer) Hook {
	if c == nil || isNilPointer(c) {
		panic("shutdown: Closer: c is nil")
	}
	return func(context.Context) error { return c.Close() }
}
