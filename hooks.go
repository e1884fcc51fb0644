package shutdown

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
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
	applyHook(*entry)
	String() string
}

type hookTimeout time.Duration

// Timeout bounds one hook: it is abandoned when d has passed since its own
// start, or at the end of the budget, whichever comes first. Its context
// ends min(10% of d, 250ms) before that bound; when the budget's end comes
// first, it ends min(10% of the budget, 250ms) before the budget does, as
// for hooks without Timeout, which may use all of the budget that remains.
// Timeout panics if d is not positive.
func Timeout(d time.Duration) HookOption {
	if d <= 0 {
		panic(fmt.Sprintf("shutdown: Timeout: d must be positive, got %v", d))
	}
	return hookTimeout(d)
}

func (o hookTimeout) applyHook(e *entry) { e.timeout = time.Duration(o) }
func (o hookTimeout) String() string     { return fmt.Sprintf("shutdown.Timeout(%v)", time.Duration(o)) }

type afterRun struct{}

// AfterRun makes a hook start only after [Manager.Run]'s function and every
// component ([Manager.Go]) started before the hooks began have returned (or
// been abandoned at the end of the budget), and every hook before it has
// ended, so a flush never races the writer it flushes. Register in the
// natural order: the database first, with AfterRun, then the server that
// uses it; the server's hook runs first, which makes the server's component
// return, and then the database closes.
//
// The other order waits until the budget ends: an AfterRun hook that runs
// before the hook that stops a component waits for that component, which
// waits for the later hook. With no function or component running when
// hooks start, AfterRun hooks do not wait.
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

// entry is one registered hook.
type entry struct {
	name     string
	hook     Hook
	timeout  time.Duration
	afterRun bool
	set      string
}

// Add registers h under name. Hooks run in reverse order of registration
// (last added, first run), like deferred calls, one at a time, unless
// [Concurrent] groups them; see [Timeout] and [AfterRun] for the other
// options. The name appears in logs and in the [*HookError] of a failed hook.
//
// Add may be called at any time. Before hooks start (during the drain delay,
// say) it is an ordinary Add. Once hooks are running, h runs next: after the
// hook now running and before any not yet started, as the last added hook
// should; a hook whose Concurrent set is running or pending joins it. Once
// the last hook has ended (or after [Manager.Release]), h is not run and an
// error record naming it is logged. A hook that waits for a hook it added
// itself waits until its own bound. Add panics if name is empty, h is nil or
// an option is nil; it never panics for being late.
func (m *Manager) Add(name string, h Hook, opts ...HookOption) {
	if name == "" {
		panic("shutdown: Add: name is empty")
	}
	if h == nil {
		panic(fmt.Sprintf("shutdown: Add(%q): hook is nil", name))
	}
	e := entry{name: name, hook: h}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("shutdown: Add(%q): option %d is nil", name, i))
		}
		o.applyHook(&e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state >= finished {
		m.log(slog.LevelError, "shutdown: hook added after "+m.state.String()+"; not run", slog.String("hook", name))
		return
	}
	if e.set == "" {
		m.steps = append(m.steps, e)
		return
	}
	if s := m.live; s != nil && s.name == e.set && s.pending > 0 {
		// The set is running: join it. pending > 0 means a member has not
		// returned to the errgroup yet, so Go never races Wait.
		s.join(e)
		return
	}
	for _, st := range m.steps {
		if s, ok := st.(*hookSet); ok && s.name == e.set {
			s.members = append(s.members, e)
			return
		}
	}
	m.steps = append(m.steps, &hookSet{name: e.set, members: []entry{e}})
}

// ErrTimeout, ErrPanic and ErrSkipped classify a [*HookError]; match them
// with [errors.Is] on the error that [Manager.Wait] or [Manager.Run] returns.
var (
	// ErrTimeout reports a hook, component or Run's function that was still
	// running at its bound and was abandoned, or a hook that returned
	// context.DeadlineExceeded after its context's deadline.
	ErrTimeout = errors.New("shutdown: timed out")
	// ErrPanic reports a hook, component or Run's function that panicked;
	// the HookError's Stack holds where.
	ErrPanic = errors.New("shutdown: panic")
	// ErrSkipped reports a hook that was not started because the budget was
	// spent before its turn came.
	ErrSkipped = errors.New("shutdown: skipped")
)

type outcome int

const (
	succeeded outcome = iota
	failed
	timedOut
	panicked
	skipped
)

func (o outcome) String() string {
	return [...]string{"ok", "failed", "timeout", "panic", "skipped"}[o]
}

// kind says what a HookError reports: a hook, a component or Run's function.
type kind int

const (
	isHook kind = iota
	isComponent
	isRun
)

// HookError reports one hook, component ([Manager.Go]) or Run's function
// that failed, timed out, panicked or was skipped.
type HookError struct {
	Name    string        // the name given to Add or Go, or "run" for Run's function
	Elapsed time.Duration // how long it ran before it ended or was abandoned
	Err     error         // its error, the panic value, or ErrTimeout/ErrSkipped
	Stack   []byte        // where it panicked, or where it is stuck when abandoned (4 per shutdown at most)

	kind     kind
	outcome  outcome
	limit    time.Duration // the bound that cut it off
	byBudget bool          // that bound was the total budget
	waited   string        // skipped while waiting, as AfterRun, for this component
}

// Error names what failed and the bound that cut it off, never a measured
// time: `shutdown: hook "db": timed out after 5s`, `shutdown: component
// "grpc": listen tcp :9090: bind: address already in use`, `shutdown: run
// function: timed out after the 25s budget`.
func (e *HookError) Error() string {
	who := fmt.Sprintf("shutdown: hook %q", e.Name)
	switch e.kind {
	case isComponent:
		who = fmt.Sprintf("shutdown: component %q", e.Name)
	case isRun:
		who = "shutdown: run function"
	}
	switch e.outcome {
	case timedOut:
		s := fmt.Sprintf("%s: timed out after %v", who, e.limit)
		if e.byBudget {
			s = fmt.Sprintf("%s: timed out after the %v budget", who, e.limit)
		}
		if e.Err != ErrTimeout && e.Err != context.DeadlineExceeded {
			s += fmt.Sprintf(": %v", e.Err)
		}
		return s
	case panicked:
		return fmt.Sprintf("%s: panic: %v", who, e.Err)
	case skipped:
		if e.waited != "" {
			return fmt.Sprintf("%s: skipped: %s had not returned when the %v budget was spent", who, e.waited, e.limit)
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
		return e.outcome == timedOut
	case ErrPanic:
		return e.outcome == panicked
	case ErrSkipped:
		return e.outcome == skipped
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

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
