package shutdown

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzShutdown builds a random set of hooks from its input, runs one
// shutdown with them inside a synctest bubble (so time is exact), and checks
// the contract's invariants against what the hooks themselves saw: each
// hook runs at most once and is reported skipped when it never started;
// items run last added first, a Concurrent set in its first-added member's
// place; a hook's context deadline and bound follow DESIGN step 6; the joined
// error names exactly the hooks that failed, panicked, timed out or were
// skipped, with the right class, Elapsed and text; and Wait returns within
// the budget.
//
// The input: budget and drain in units of fuzzUnit, a mode byte (how Run is
// used, and how long Run's fn takes after its context is done), and three
// bytes per hook: kind and options, duration, Timeout.
func FuzzShutdown(f *testing.F) {
	hook := func(k fuzzKind, set int, afterRun bool, d, timeout byte) []byte {
		b := byte(k) + byte(set)*byte(fuzzKinds)
		if afterRun {
			b += 4 * byte(fuzzKinds)
		}
		return []byte{b, d, timeout}
	}
	cat := func(hs ...[]byte) []byte { return slices.Concat(hs...) }
	// Each kind alone, within its bound and past it.
	for k := range fuzzKinds {
		f.Add(uint16(100), uint16(0), byte(fuzzNoRun), hook(k, 0, false, 10, 0))
		f.Add(uint16(100), uint16(0), byte(fuzzNoRun), hook(k, 0, false, 50, 20))
		f.Add(uint16(30), uint16(0), byte(fuzzNoRun), hook(k, 0, false, 200, 0))
	}
	// Ordering: plain hooks, a set between them, two sets.
	f.Add(uint16(500), uint16(0), byte(fuzzNoRun), cat(
		hook(fuzzOK, 0, false, 0, 0), hook(fuzzSleep, 1, false, 20, 0), hook(fuzzError, 0, false, 5, 0),
		hook(fuzzCtxErr, 1, false, 0, 30), hook(fuzzIgnore, 1, false, 0, 40), hook(fuzzPanic, 0, false, 0, 0)))
	f.Add(uint16(300), uint16(50), byte(fuzzNoRun), cat(
		hook(fuzzSleep, 2, false, 40, 0), hook(fuzzSleep, 3, false, 30, 0), hook(fuzzOK, 2, false, 0, 0),
		hook(fuzzIgnore, 0, false, 0, 20), hook(fuzzSleep, 3, false, 60, 50)))
	// The budget runs out: abandoned, then skipped hooks and sets.
	f.Add(uint16(100), uint16(20), byte(fuzzNoRun), cat(
		hook(fuzzOK, 0, false, 0, 0), hook(fuzzOK, 1, false, 0, 0), hook(fuzzIgnore, 0, false, 0, 0), hook(fuzzOK, 0, false, 0, 0)))
	// Ties: a hook that ends exactly at its bound.
	f.Add(uint16(100), uint16(0), byte(fuzzNoRun), cat(hook(fuzzSleep, 0, false, 30, 30), hook(fuzzSleep, 0, false, 100, 0)))
	// Run: AfterRun hooks wait for fn; fn past the budget; fn returning
	// first (no drain); fn panicking.
	f.Add(uint16(400), uint16(30), byte(fuzzRunTrigger)|4<<2, cat(
		hook(fuzzOK, 0, true, 0, 0), hook(fuzzSleep, 1, true, 10, 0), hook(fuzzSleep, 1, false, 10, 0), hook(fuzzCtxErr, 0, false, 0, 50)))
	f.Add(uint16(100), uint16(0), byte(fuzzRunTrigger)|40<<2, cat(hook(fuzzOK, 0, true, 0, 0), hook(fuzzOK, 0, false, 0, 0)))
	f.Add(uint16(100), uint16(50), byte(fuzzRunReturns), cat(hook(fuzzOK, 0, true, 0, 0), hook(fuzzSleep, 0, false, 10, 0)))
	f.Add(uint16(100), uint16(0), byte(fuzzRunPanics), cat(hook(fuzzError, 1, true, 0, 0), hook(fuzzOK, 1, false, 0, 0)))
	// The 250ms cap on the margin: a budget and a Timeout over 2.5s.
	f.Add(uint16(400), uint16(0), byte(fuzzNoRun), cat(hook(fuzzCtxErr, 0, false, 0, 0), hook(fuzzCtxErr, 0, false, 0, 255)))

	f.Fuzz(func(t *testing.T, budget, drain uint16, mode byte, hooks []byte) {
		checkShutdown(t, decodeFuzz(budget, drain, mode, hooks))
	})
}

// fuzzUnit is the grain of every duration in FuzzShutdown: coarse enough that
// hooks often end exactly at a bound, fine enough that margins differ.
const fuzzUnit = 10 * time.Millisecond

type fuzzKind byte

const (
	fuzzOK     fuzzKind = iota // returns nil at once
	fuzzError                  // sleeps d, returns errFuzz
	fuzzPanic                  // sleeps d, panics
	fuzzIgnore                 // ignores ctx: blocks until the test releases it after Wait
	fuzzSleep                  // sleeps d, returns nil
	fuzzCtxErr                 // returns ctx.Err() once ctx is done
	fuzzKinds
)

func (k fuzzKind) String() string {
	return [...]string{"ok", "error", "panic", "ignore", "sleep", "ctxerr"}[k]
}

// How the fuzzed shutdown starts, and whether Run is used.
const (
	fuzzNoRun      = iota // Trigger, no Run
	fuzzRunTrigger        // Run; Trigger; fn returns fnDelay after its ctx is done
	fuzzRunReturns        // Run; fn returns nil at once, which starts shutdown
	fuzzRunPanics         // Run; fn panics at once, which starts shutdown
)

var errFuzz = errors.New("fuzz: hook failed")

type fuzzHook struct {
	name     string
	kind     fuzzKind
	d        time.Duration
	timeout  time.Duration // 0: no Timeout
	set      string        // "": no Concurrent
	afterRun bool
}

type fuzzSpec struct {
	budget, drain time.Duration
	mode          int
	fnDelay       time.Duration
	hooks         []fuzzHook
}

func (s fuzzSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "budget %v, drain %v, mode %d, fn delay %v", s.budget, s.drain, s.mode, s.fnDelay)
	for _, h := range s.hooks {
		fmt.Fprintf(&b, "\n  %s: %v d=%v", h.name, h.kind, h.d)
		if h.timeout > 0 {
			fmt.Fprintf(&b, " Timeout(%v)", h.timeout)
		}
		if h.set != "" {
			fmt.Fprintf(&b, " Concurrent(%q)", h.set)
		}
		if h.afterRun {
			b.WriteString(" AfterRun()")
		}
	}
	return b.String()
}

// decodeFuzz turns the fuzzer's input into a shutdown to run. Every input
// is valid: the drain is kept shorter than the budget, as New requires.
func decodeFuzz(budget, drain uint16, mode byte, hooks []byte) fuzzSpec {
	units := time.Duration(budget%500) + 1 // up to 5s: past the 2.5s where the margin caps
	s := fuzzSpec{
		budget:  units * fuzzUnit,
		drain:   time.Duration(drain) % units * fuzzUnit,
		mode:    int(mode % 4),
		fnDelay: time.Duration(mode/4) * 5 * fuzzUnit,
	}
	for i := 0; i+3 <= len(hooks) && len(s.hooks) < 16; i += 3 {
		b := hooks[i]
		h := fuzzHook{
			name:     fmt.Sprintf("h%d", len(s.hooks)),
			kind:     fuzzKind(b % byte(fuzzKinds)),
			d:        time.Duration(hooks[i+1]) * fuzzUnit,
			timeout:  time.Duration(hooks[i+2]) * fuzzUnit,
			afterRun: b/(4*byte(fuzzKinds))%2 == 1,
		}
		if n := b / byte(fuzzKinds) % 4; n > 0 {
			h.set = fmt.Sprintf("s%d", n)
		}
		s.hooks = append(s.hooks, h)
	}
	return s
}

func (h fuzzHook) options() []HookOption {
	var opts []HookOption
	if h.timeout > 0 {
		opts = append(opts, Timeout(h.timeout))
	}
	if h.set != "" {
		opts = append(opts, Concurrent(h.set))
	}
	if h.afterRun {
		opts = append(opts, AfterRun())
	}
	return opts
}

// fuzzEvent is what one hook (or fn) saw: when it started and ended, in
// fake time and in the order of all events, and its context's deadline.
type fuzzEvent struct {
	starts             int
	start, end         time.Time
	startSeq, endSeq   int
	ended              bool
	deadline           time.Time
	hasDeadline        bool
	ctxDone            time.Time // fn only: when its context was done
	endedAfterReleased bool      // an ignore hook, ended by the test
}

// fuzzObs records the events of one fuzzed shutdown.
type fuzzObs struct {
	mu      sync.Mutex
	seq     int
	hooks   []fuzzEvent
	fn      fuzzEvent
	running sync.WaitGroup // hooks and fn that started and have not ended
}

func (o *fuzzObs) next() int { o.seq++; return o.seq }

func (o *fuzzObs) started(e *fuzzEvent, ctx context.Context) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running.Add(1)
	e.starts++
	e.start, e.startSeq = time.Now(), o.next()
	e.deadline, e.hasDeadline = ctx.Deadline()
}

func (o *fuzzObs) ended(e *fuzzEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e.ended, e.end, e.endSeq = true, time.Now(), o.next()
}

func (o *fuzzObs) hook(i int, h fuzzHook, release <-chan struct{}) Hook {
	return func(ctx context.Context) error {
		e := &o.hooks[i]
		o.started(e, ctx)
		defer o.running.Done()
		switch h.kind {
		case fuzzOK:
		case fuzzError, fuzzPanic, fuzzSleep:
			time.Sleep(h.d)
		case fuzzIgnore:
			<-release
			o.mu.Lock()
			e.endedAfterReleased = true
			o.mu.Unlock()
		case fuzzCtxErr:
			<-ctx.Done()
		}
		o.ended(e)
		switch h.kind {
		case fuzzError:
			return errFuzz
		case fuzzPanic:
			panic("fuzz panic in " + h.name)
		case fuzzCtxErr:
			return ctx.Err()
		}
		return nil
	}
}

// fuzzOutcome is one hook's class in the result; outcomeNone: not in it.
type fuzzOutcome int

const (
	outcomeNone fuzzOutcome = iota
	outcomeFailed
	outcomeTimeout
	outcomePanic
	outcomeSkipped
)

func (k fuzzOutcome) String() string {
	return [...]string{"none", "failed", "timeout", "panic", "skipped"}[k]
}

func outcomeOf(he *HookError) fuzzOutcome {
	var got []fuzzOutcome
	for o, sentinel := range map[fuzzOutcome]error{outcomeTimeout: ErrTimeout, outcomePanic: ErrPanic, outcomeSkipped: ErrSkipped} {
		if errors.Is(he, sentinel) {
			got = append(got, o)
		}
	}
	switch len(got) {
	case 0:
		return outcomeFailed
	case 1:
		return got[0]
	}
	return -1 // more than one class: reported as a mismatch
}

// fuzzWant is what the result may say of one hook (or of fn, as "run").
type fuzzWant struct {
	allowed []fuzzOutcome
	elapsed time.Duration            // when in the result
	text    map[fuzzOutcome][]string // the Error() texts allowed
}

func checkShutdown(t *testing.T, s fuzzSpec) {
	o := &fuzzObs{hooks: make([]fuzzEvent, len(s.hooks))}
	var (
		t0, waitEnd time.Time
		waitSeq     int
		err, runErr error
		report      *Report
	)
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		m := newTest(WithTimeout(s.budget), WithDrainDelay(s.drain))
		for i, h := range s.hooks {
			m.Add(h.name, o.hook(i, h, release), h.options()...)
		}

		t0 = time.Now()
		runDone := make(chan struct{})
		if s.mode != fuzzNoRun {
			fnStarted := make(chan struct{})
			go func() {
				defer close(runDone)
				runErr = m.Run(func(ctx context.Context) error {
					o.started(&o.fn, ctx)
					defer o.running.Done()
					close(fnStarted)
					switch s.mode {
					case fuzzRunTrigger:
						<-ctx.Done()
						o.mu.Lock()
						o.fn.ctxDone = time.Now()
						o.mu.Unlock()
						time.Sleep(s.fnDelay)
					case fuzzRunPanics:
						o.ended(&o.fn)
						panic("fuzz panic in fn")
					}
					o.ended(&o.fn)
					return ctx.Err()
				})
			}()
			<-fnStarted
		}
		if s.mode == fuzzNoRun || s.mode == fuzzRunTrigger {
			m.Trigger()
		}
		err = m.Wait()
		waitEnd = time.Now()
		report = m.Report()
		o.mu.Lock()
		waitSeq = o.next()
		o.mu.Unlock()
		// Release the hooks that ignore their context and wait for every
		// hook that started, even one started late, to end, so that the
		// bubble can end and the checks below see every event. Once every
		// goroutine is blocked (synctest.Wait), no hook can start any more.
		close(release)
		synctest.Wait()
		o.running.Wait()
		if s.mode != fuzzNoRun {
			<-runDone
		}
	})
	if s.mode != fuzzNoRun && runErr != err {
		t.Errorf("Run() = %v, Wait() = %v: want the same error", runErr, err)
	}
	got := checkFuzzResult(t, s, o, t0, waitEnd.Sub(t0), waitSeq, err)
	checkFuzzReport(t, s, o, t0, waitEnd.Sub(t0), got, report)
	if t.Failed() {
		t.Logf("input: %v", s)
	}
}

// checkFuzzResult checks the result and the order of a fuzzed shutdown
// against the events, and returns the result's HookErrors by name.
func checkFuzzResult(t *testing.T, s fuzzSpec, o *fuzzObs, t0 time.Time, waited time.Duration, waitSeq int, err error) map[string]*HookError {
	budgetEnd := t0.Add(s.budget)
	if waited > s.budget {
		t.Errorf("Wait returned after %v, want at most the %v budget", waited, s.budget)
	}
	hooksStart := t0.Add(s.drain)
	if s.mode == fuzzRunReturns || s.mode == fuzzRunPanics {
		hooksStart = t0 // fn returned first: no drain
	}
	if s.mode == fuzzRunTrigger && !o.fn.ctxDone.Equal(hooksStart) {
		t.Errorf("fn's context done at %v, want at the end of the %v drain", o.fn.ctxDone.Sub(t0), s.drain)
	}

	// What each hook's own events allow the result to say of it.
	want := make(map[string]fuzzWant)
	bounds := make([]time.Time, len(s.hooks))
	for i, h := range s.hooks {
		e := o.hooks[i]
		who := fmt.Sprintf("shutdown: hook %q", h.name)
		if e.starts == 0 {
			// An AfterRun hook that was waiting for fn when the budget ran
			// out says so; fn returning exactly then allows both texts.
			var texts []string
			if !h.afterRun || s.mode != fuzzRunTrigger || o.fn.end.Before(budgetEnd) || o.fn.end.Equal(budgetEnd) {
				texts = append(texts, fmt.Sprintf("%s: skipped: the %v budget was spent", who, s.budget))
			}
			if h.afterRun && s.mode == fuzzRunTrigger && !o.fn.end.Before(budgetEnd) {
				texts = append(texts, fmt.Sprintf("%s: skipped: Run's function had not returned when the %v budget was spent", who, s.budget))
			}
			want[h.name] = fuzzWant{allowed: []fuzzOutcome{outcomeSkipped}, text: map[fuzzOutcome][]string{outcomeSkipped: texts}}
			continue
		}
		if e.starts > 1 {
			t.Errorf("hook %s started %d times, want once", h.name, e.starts)
		}
		if e.start.Before(hooksStart) {
			t.Errorf("hook %s started at %v, before hooks start at %v", h.name, e.start.Sub(t0), hooksStart.Sub(t0))
		}
		if e.start.After(budgetEnd) {
			t.Errorf("hook %s started at %v, after the %v budget", h.name, e.start.Sub(t0), s.budget)
		}
		// DESIGN step 6: the bound is the earlier of Timeout and the budget's
		// end; the context ends min(10%, 250ms) before it, and hooks bounded
		// by the budget share one context.
		bound, limit := budgetEnd, fmt.Sprintf("the %v budget", s.budget)
		deadline := budgetEnd.Add(-min(s.budget/10, 250*time.Millisecond))
		if h.timeout > 0 && e.start.Add(h.timeout).Before(budgetEnd) {
			bound, limit = e.start.Add(h.timeout), h.timeout.String()
			deadline = bound.Add(-min(h.timeout/10, 250*time.Millisecond))
		}
		bounds[i] = bound
		// A hook reached in the very instant the budget ends may be handed
		// to its goroutine and abandoned at once; that goroutine may call it
		// only after Wait has returned. Nothing else starts after Wait.
		if e.startSeq > waitSeq && !e.start.Equal(budgetEnd) {
			t.Errorf("hook %s started at %v, after Wait returned", h.name, e.start.Sub(t0))
		}
		if !e.hasDeadline || !e.deadline.Equal(deadline) {
			t.Errorf("hook %s (started at %v) has ctx deadline %v (set: %t), want %v", h.name, e.start.Sub(t0), e.deadline.Sub(t0), e.hasDeadline, deadline.Sub(t0))
		}
		timedOut := fmt.Sprintf("%s: timed out after %s", who, limit)
		var natural fuzzOutcome
		text := map[fuzzOutcome][]string{outcomeTimeout: {timedOut}}
		switch h.kind {
		case fuzzError:
			natural, text[outcomeFailed] = outcomeFailed, []string{who + ": " + errFuzz.Error()}
		case fuzzPanic:
			natural, text[outcomePanic] = outcomePanic, []string{fmt.Sprintf("%s: panic: fuzz panic in %s", who, h.name)}
		case fuzzCtxErr:
			natural = outcomeTimeout // context.DeadlineExceeded after its deadline
		}
		var w fuzzWant
		switch end := e.end; {
		case e.endedAfterReleased || end.After(bound):
			// Still running at its bound: abandoned.
			w = fuzzWant{allowed: []fuzzOutcome{outcomeTimeout}, elapsed: bound.Sub(e.start)}
		case end.Equal(bound):
			// Ended at its bound: returned or abandoned, both are right.
			w = fuzzWant{allowed: []fuzzOutcome{natural, outcomeTimeout}, elapsed: bound.Sub(e.start)}
		default:
			w = fuzzWant{allowed: []fuzzOutcome{natural}, elapsed: end.Sub(e.start)}
			if e.endSeq > waitSeq {
				t.Errorf("hook %s ended within its bound but after Wait returned", h.name)
			}
		}
		w.text = text
		want[h.name] = w
		if h.afterRun && s.mode == fuzzRunTrigger && (!o.fn.ended || o.fn.endSeq > e.startSeq) {
			t.Errorf("AfterRun hook %s started at %v, before fn returned", h.name, e.start.Sub(t0))
		}
	}
	// Run's fn is reported as "run" when it panics or outlives the budget.
	runWant := fuzzWant{allowed: []fuzzOutcome{outcomeNone}}
	switch s.mode {
	case fuzzRunPanics:
		runWant = fuzzWant{allowed: []fuzzOutcome{outcomePanic}, text: map[fuzzOutcome][]string{outcomePanic: {`shutdown: run function: panic: fuzz panic in fn`}}}
	case fuzzRunTrigger:
		timedOut := map[fuzzOutcome][]string{outcomeTimeout: {fmt.Sprintf(`shutdown: run function: timed out after the %v budget`, s.budget)}}
		switch {
		case o.fn.end.After(budgetEnd):
			runWant = fuzzWant{allowed: []fuzzOutcome{outcomeTimeout}, text: timedOut}
		case o.fn.end.Equal(budgetEnd):
			runWant = fuzzWant{allowed: []fuzzOutcome{outcomeNone, outcomeTimeout}, text: timedOut}
		case o.fn.endSeq > waitSeq:
			t.Errorf("fn ended within the budget but after Wait returned")
		}
	}
	want["run"] = runWant

	// What the result says.
	got := make(map[string]*HookError)
	var joined []error
	if err != nil {
		u, ok := err.(interface{ Unwrap() []error })
		if !ok {
			t.Fatalf("Wait() = %v (%T), want an errors.Join of *HookError", err, err)
		}
		joined = u.Unwrap()
	}
	for _, e := range joined {
		he, ok := e.(*HookError)
		if !ok {
			t.Errorf("Wait() includes %v (%T), want only *HookError", e, e)
			continue
		}
		if got[he.Name] != nil {
			t.Errorf("Wait() names hook %s twice: %v", he.Name, err)
		}
		got[he.Name] = he
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("Wait() names %s, which is not a hook", name)
		}
	}
	for name, w := range want {
		he := got[name]
		outcome := outcomeNone
		if he != nil {
			outcome = outcomeOf(he)
		}
		if !slices.Contains(w.allowed, outcome) {
			t.Errorf("hook %s: result says %v (%v), want one of %v", name, outcome, he, w.allowed)
			continue
		}
		if he == nil {
			continue
		}
		if texts := w.text[outcome]; !slices.Contains(texts, he.Error()) {
			t.Errorf("hook %s: Error() = %q, want one of %q", name, he.Error(), texts)
		}
		if name != "run" && he.Elapsed != w.elapsed {
			t.Errorf("hook %s: Elapsed = %v, want %v", name, he.Elapsed, w.elapsed)
		}
		if outcome != outcomeTimeout && name != "run" && o.hooks[hookIndex(s, name)].endSeq > waitSeq {
			t.Errorf("hook %s: result says %v, but it returned only after Wait did", name, outcome)
		}
		if outcome == outcomePanic && len(he.Stack) == 0 {
			t.Errorf("hook %s: panicked, but its HookError has no Stack", name)
		}
	}

	// Order (DESIGN step 5): items run last added first, a set in its
	// first-added member's place. Every hook of an earlier item has ended,
	// or been abandoned at its bound, before any hook of a later one starts;
	// once a hook is skipped, nothing after it starts.
	var items [][]int
	setAt := make(map[string]int)
	for i, h := range s.hooks {
		if j, ok := setAt[h.set]; ok && h.set != "" {
			items[j] = append(items[j], i)
			continue
		}
		if h.set != "" {
			setAt[h.set] = len(items)
		}
		items = append(items, []int{i})
	}
	slices.Reverse(items)
	for a := range items {
		for b := a + 1; b < len(items); b++ {
			for _, y := range items[b] {
				ey := o.hooks[y]
				if ey.starts == 0 {
					continue
				}
				for _, x := range items[a] {
					ex := o.hooks[x]
					abandoned := got[s.hooks[x].name] != nil && outcomeOf(got[s.hooks[x].name]) == outcomeTimeout
					switch {
					case ex.starts == 0:
						t.Errorf("hook %s started, but %s, which runs before it, did not", s.hooks[y].name, s.hooks[x].name)
					case ex.ended && ex.endSeq < ey.startSeq:
					case abandoned && !ey.start.Before(bounds[x]):
					default:
						t.Errorf("hook %s started at %v, before %s (which runs before it) ended or was abandoned", s.hooks[y].name, ey.start.Sub(t0), s.hooks[x].name)
					}
				}
			}
		}
	}
	// The first item starts when the hooks start, unless it waits for fn.
	if len(items) > 0 {
		for _, x := range items[0] {
			e := o.hooks[x]
			waits := s.hooks[x].afterRun && s.mode == fuzzRunTrigger
			if e.starts > 0 && !waits && !e.start.Equal(hooksStart) {
				t.Errorf("first hook %s started at %v, want %v", s.hooks[x].name, e.start.Sub(t0), hooksStart.Sub(t0))
			}
		}
	}
	return got
}

func hookIndex(s fuzzSpec, name string) int {
	return slices.IndexFunc(s.hooks, func(h fuzzHook) bool { return h.name == name })
}

// checkFuzzReport checks Manager.Report against the events and the result:
// one row per hook, in start order, with the result's outcome and error,
// the hook's own start and Elapsed.
func checkFuzzReport(t *testing.T, s fuzzSpec, o *fuzzObs, t0 time.Time, waited time.Duration, got map[string]*HookError, r *Report) {
	if r == nil {
		t.Fatal("Report() = nil after Wait returned")
	}
	drain := s.drain
	if s.mode == fuzzRunReturns || s.mode == fuzzRunPanics {
		drain = 0
	}
	if r.Budget != s.budget || r.Drain != drain || r.Elapsed != waited {
		t.Errorf("Report() budget %v, drain %v, elapsed %v; want %v, %v, %v", r.Budget, r.Drain, r.Elapsed, s.budget, drain, waited)
	}
	hooks := slices.DeleteFunc(slices.Clone(r.Hooks), func(h HookReport) bool { return h.Component })
	if len(hooks) != len(s.hooks) {
		t.Errorf("Report() has %d hook rows, want one per hook (%d)", len(hooks), len(s.hooks))
	}
	seen := make(map[string]bool)
	for k, row := range hooks {
		i := hookIndex(s, row.Name)
		if i < 0 || seen[row.Name] {
			t.Errorf("Report() row %d names %q: not a hook, or twice", k, row.Name)
			continue
		}
		seen[row.Name] = true
		if k > 0 && row.Start < hooks[k-1].Start {
			t.Errorf("Report() row %s starts at %v, before the row above it (%v)", row.Name, row.Start, hooks[k-1].Start)
		}
		h, e, he := s.hooks[i], o.hooks[i], got[row.Name]
		outcome := "ok"
		if he != nil {
			outcome = outcomeOf(he).String()
		}
		if row.Set != h.set || row.Outcome != outcome || row.Err != he {
			t.Errorf("Report() row %s: set %q, outcome %s, err %v; want %q, %s, %v", row.Name, row.Set, row.Outcome, row.Err, h.set, outcome, he)
		}
		if e.starts == 0 {
			continue
		}
		elapsed := e.end.Sub(e.start)
		if he != nil {
			elapsed = he.Elapsed
		}
		if row.Start != e.start.Sub(t0) || row.Elapsed != elapsed {
			t.Errorf("Report() row %s: start %v, elapsed %v; want %v, %v", row.Name, row.Start, row.Elapsed, e.start.Sub(t0), elapsed)
		}
	}
}

// An AfterRun hook reached after the budget ran out, with fn long returned,
// was sometimes reported as waiting for fn: runHook's select had both
// fnDone and the budget's end ready and picked one at random. Found by
// FuzzShutdown (testdata/fuzz/FuzzShutdown/4ba1317ef299f545).
func TestSkippedAfterRunTextWhenFnHadReturned(t *testing.T) {
	for range 20 { // a random select is wrong half the time
		synctest.Test(t, func(t *testing.T) {
			m := newTest(WithTimeout(time.Second))
			release := make(chan struct{})
			m.Add("flush", func(context.Context) error { return nil }, AfterRun())
			m.Add("stuck", func(context.Context) error { <-release; return nil })
			go m.Run(func(ctx context.Context) error { <-ctx.Done(); return nil })
			synctest.Wait() // Run has called fn
			m.Trigger()
			err := m.Wait()
			close(release)
			want := `shutdown: hook "flush": skipped: the 1s budget was spent`
			var he *HookError
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				if h := e.(*HookError); h.Name == "flush" {
					he = h
				}
			}
			if he == nil || he.Error() != want {
				t.Fatalf("flush: %v, want %q: fn had returned long before", he, want)
			}
		})
	}
}
