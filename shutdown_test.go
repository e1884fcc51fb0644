package shutdown

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The defaults depend on these; tests that need them use t.Setenv.
	os.Unsetenv("KUBERNETES_SERVICE_HOST")
	os.Unsetenv("NOTIFY_SOCKET")
	if mode := os.Getenv(childEnv); mode != "" && childMain != nil {
		os.Exit(childMain(mode))
	}
	goleak.VerifyTestMain(m)
}

// childEnv switches the test binary into a child process for the real
// signal tests (signal_unix_test.go), as os/signal's own tests do.
const childEnv = "SHUTDOWN_TEST_CHILD"

// childMain is set on platforms with real-signal tests.
var childMain func(mode string) int

var runtimeGoexit = runtime.Goexit

// seams replaces the OS calls of New in tests (STYLE 18).
type seams struct {
	notify func(chan<- os.Signal, ...os.Signal)
	exit   func(int)
}

func (s seams) apply(c *config) {
	if s.notify != nil {
		c.notify = s.notify
	}
	if s.exit != nil {
		c.exit = s.exit
	}
}
func (s seams) String() string { return "seams" }

var discard = slog.New(slog.DiscardHandler)

// newTest returns a Manager with no signals and a silent logger, plus opts.
func newTest(opts ...Option) *Manager {
	return New(append([]Option{WithSignals(), WithLogger(discard)}, opts...)...)
}

// logBuffer collects log records as text, without times.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// waitFor polls the log until it holds every one of want, for records that
// the Manager logs after Wait has returned (log records are handled on a
// goroutine of their own), and returns it. It fails the test after 30s.
func (b *logBuffer) waitFor(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := b.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %s after 30s:\n%s", missing, s)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// recorder records the order in which hooks run.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) hook(name string) Hook {
	return func(context.Context) error {
		r.add(name)
		return nil
	}
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func TestOrderIsLastAddedFirst(t *testing.T) {
	m := newTest()
	var r recorder
	for _, n := range []string{"db", "cache", "http"} {
		m.Add(n, r.hook(n))
	}
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if got, want := r.list(), []string{"http", "cache", "db"}; !slices.Equal(got, want) {
		t.Errorf("hooks ran %v, want %v", got, want)
	}
}

func TestConcurrentSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		var r recorder
		barrier := make(chan struct{})
		var arrived sync.WaitGroup
		arrived.Add(3)
		errA, errC := errors.New("a failed"), errors.New("c failed")
		member := func(name string, err error) Hook {
			return func(ctx context.Context) error {
				r.add(name + " start")
				arrived.Done()
				// Every member must reach the barrier: proof that they run at
				// the same time. A serial run would block here until the bound.
				select {
				case <-barrier:
				case <-ctx.Done():
					return ctx.Err()
				}
				r.add(name + " end")
				return err
			}
		}
		go func() { arrived.Wait(); close(barrier) }()

		m.Add("before", r.hook("before"))
		m.Add("a", member("a", errA), Concurrent("servers"))
		m.Add("middle", r.hook("middle"))
		m.Add("b", member("b", nil), Concurrent("servers"))
		m.Add("c", member("c", errC), Concurrent("servers"))
		m.Add("after", r.hook("after"))
		m.Trigger()
		err := m.Wait()

		got := r.list()
		if got[0] != "after" || got[1] != "middle" || got[len(got)-1] != "before" {
			t.Errorf("order = %v, want after, middle, the set, before", got)
		}
		set := got[2 : len(got)-1]
		for i, s := range set {
			if i < 3 && !strings.HasSuffix(s, "start") {
				t.Errorf("set = %v: an end before every member started", set)
			}
		}
		for _, want := range []error{errA, errC} {
			if !errors.Is(err, want) {
				t.Errorf("Wait() = %v, want it to include %v", err, want)
			}
		}
		if errors.Is(err, ErrTimeout) {
			t.Errorf("Wait() = %v: a member timed out, so the set did not run concurrently", err)
		}
		var names []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			names = append(names, e.(*HookError).Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"a", "c"}) {
			t.Errorf("failed hooks = %v, want [a c]: one error slot each", names)
		}
	})
}

func TestHookTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(time.Minute))
		release := make(chan struct{})
		defer close(release)
		var deadline time.Time
		var started time.Time
		m.Add("ignores", func(ctx context.Context) error { <-release; return nil }, Timeout(3*time.Second))
		m.Add("db", func(ctx context.Context) error {
			started = time.Now()
			deadline, _ = ctx.Deadline()
			<-ctx.Done()
			return ctx.Err()
		}, Timeout(5*time.Second))
		start := time.Now()
		m.Trigger()
		err := m.Wait()

		if got, want := deadline.Sub(started), 5*time.Second-250*time.Millisecond; got != want {
			t.Errorf("db's context deadline = start+%v, want start+%v", got, want)
		}
		if got, want := time.Since(start), 4750*time.Millisecond+3*time.Second; got != want {
			t.Errorf("Wait returned after %v, want %v (db until its deadline, then ignores until its bound)", got, want)
		}
		want := "shutdown: hook \"db\": timed out after 5s\nshutdown: hook \"ignores\": timed out after 3s"
		if err == nil || err.Error() != want {
			t.Fatalf("Wait() = %v, want %q", err, want)
		}
		var he *HookError
		if !errors.As(err, &he) || he.Name != "db" || he.Elapsed != 4750*time.Millisecond || !errors.Is(he, context.DeadlineExceeded) {
			t.Errorf("first HookError = %+v, want db after 4.75s wrapping context.DeadlineExceeded", he)
		}
		if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrPanic) || errors.Is(err, ErrSkipped) {
			t.Errorf("errors.Is(%v, ErrTimeout/ErrPanic/ErrSkipped) wrong", err)
		}
	})
}

func TestBudgetAbandonsAndSkips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(10 * time.Second))
		release := make(chan struct{})
		defer close(release)
		var r recorder
		m.Add("never1", r.hook("never1"))
		m.Add("never2", r.hook("never2"), Concurrent("s"))
		m.Add("never3", r.hook("never3"), Concurrent("s"))
		m.Add("stuck", func(ctx context.Context) error { <-release; return nil })
		m.Add("quick", r.hook("quick"))
		start := time.Now()
		m.Trigger()
		err := m.Wait()
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("Wait returned after %v, want exactly the 10s budget", got)
		}
		if got := r.list(); !slices.Equal(got, []string{"quick"}) {
			t.Errorf("hooks ran %v, want only [quick]", got)
		}
		want := `shutdown: hook "stuck": timed out after the 10s budget
shutdown: hook "never3": skipped: the 10s budget was spent
shutdown: hook "never2": skipped: the 10s budget was spent
shutdown: hook "never1": skipped: the 10s budget was spent`
		if err == nil || !sameLines(err.Error(), want) {
			t.Fatalf("Wait() = %v, want %s", err, want)
		}
		if !errors.Is(err, ErrSkipped) || !errors.Is(err, ErrTimeout) {
			t.Errorf("Wait() = %v: want both ErrSkipped and ErrTimeout", err)
		}
	})
}

// sameLines compares two multi-line strings as sets of lines, for sets
// whose members end in any order.
func sameLines(a, b string) bool {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func TestSharedContextDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(time.Second))
		var d1, d2 time.Time
		m.Add("b", func(ctx context.Context) error { d2, _ = ctx.Deadline(); return nil })
		m.Add("a", func(ctx context.Context) error {
			d1, _ = ctx.Deadline()
			time.Sleep(100 * time.Millisecond)
			return nil
		})
		start := time.Now()
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatal(err)
		}
		if want := start.Add(900 * time.Millisecond); !d1.Equal(want) || !d2.Equal(want) {
			t.Errorf("deadlines = %v, %v; want both budget end less 10%% (%v)", d1.Sub(start), d2.Sub(start), want.Sub(start))
		}
	})
}

func TestPanics(t *testing.T) {
	m := newTest()
	var r recorder
	m.Add("after", r.hook("after"))
	m.Add("boom", func(context.Context) error { panic("kaboom") })
	err := m.Run(func(ctx context.Context) error { panic(io.ErrUnexpectedEOF) })
	if got := r.list(); !slices.Equal(got, []string{"after"}) {
		t.Errorf("hooks ran %v, want [after]: a panic must not stop the others", got)
	}
	if !errors.Is(err, ErrPanic) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Run() = %v, want ErrPanic and the panic value io.ErrUnexpectedEOF", err)
	}
	var hookErrs []*HookError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		hookErrs = append(hookErrs, e.(*HookError))
	}
	if len(hookErrs) != 2 || hookErrs[0].Name != "run" || hookErrs[1].Name != "boom" {
		t.Fatalf("Run() = %v, want a HookError for run, then boom", err)
	}
	for _, he := range hookErrs {
		if !bytes.Contains(he.Stack, []byte("shutdown_test.go")) {
			t.Errorf("HookError %q Stack does not name the test file:\n%s", he.Name, he.Stack)
		}
	}
	if want := `shutdown: hook "boom": panic: kaboom`; hookErrs[1].Error() != want {
		t.Errorf("Error() = %q, want %q", hookErrs[1].Error(), want)
	}
}

func TestGoexitInHook(t *testing.T) {
	for _, opts := range [][]HookOption{nil, {Timeout(time.Minute)}, {Concurrent("s")}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			m := newTest()
			var r recorder
			m.Add("after", r.hook("after"))
			m.Add("goexit", func(context.Context) error { runtimeGoexit(); return nil }, opts...)
			m.Add("before", r.hook("before"))
			m.Trigger()
			if err := m.Wait(); !errors.Is(err, errGoexit) {
				t.Errorf("Wait() = %v, want errGoexit", err)
			}
			if got := r.list(); !slices.Equal(got, []string{"before", "after"}) {
				t.Errorf("hooks ran %v, want [before after]", got)
			}
		})
	}
}

func TestJoinedErrors(t *testing.T) {
	errDB, errCause := errors.New("db: close failed"), errors.New("config reload failed")
	cases := []struct {
		name    string
		setup   func(m *Manager)
		trigger func(m *Manager)
		want    []error
		wantNil bool
	}{
		{"clean trigger", func(*Manager) {}, (*Manager).Trigger, nil, true},
		{"hook error", func(m *Manager) {
			m.Add("db", func(context.Context) error { return errDB })
		}, (*Manager).Trigger, []error{errDB}, false},
		{"cause and hook", func(m *Manager) {
			m.Add("db", func(context.Context) error { return errDB })
		}, func(m *Manager) { m.TriggerCause(errCause) }, []error{errCause, errDB}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newTest()
			tc.setup(m)
			tc.trigger(m)
			err := m.Wait()
			if tc.wantNil != (err == nil) {
				t.Fatalf("Wait() = %v, want nil: %v", err, tc.wantNil)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Wait() = %v, want errors.Is(_, %v)", err, w)
				}
			}
			var he *HookError
			if errors.Is(err, errDB) && (!errors.As(err, &he) || he.Name != "db") {
				t.Errorf("errors.As(%v, *HookError) = %+v, want Name db", err, he)
			}
		})
	}
}

func TestTriggerAndWaitFromManyGoroutines(t *testing.T) {
	m := newTest()
	var r recorder
	m.Add("only", r.hook("only"))
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range 10 {
		wg.Go(func() { m.Trigger() })
		wg.Go(func() { errs[i] = m.Wait() })
		wg.Go(func() { m.Add(fmt.Sprint("late", i), r.hook("late")) })
	}
	wg.Wait()
	for i, err := range errs[:10] {
		if err != nil {
			t.Errorf("Wait() #%d = %v, want nil", i, err)
		}
	}
	got := r.list()
	if n := slices.Index(got, "only"); n < 0 || slices.Contains(got[n+1:], "only") {
		t.Errorf("hooks ran %v, want only exactly once", got)
	}
}

func TestTriggerCause(t *testing.T) {
	m := newTest()
	// The hook holds shutdown open: a TriggerCause after the end is only
	// logged (TestReviewTriggerCauseAfterFinish).
	release := make(chan struct{})
	m.Add("hold", func(context.Context) error { <-release; return nil })
	first, second := errors.New("disk full"), errors.New("second reason")
	m.TriggerCause(first)
	m.TriggerCause(second)
	m.TriggerCause(nil)
	close(release)
	err := m.Wait()
	if got := context.Cause(m.Context()); got != first {
		t.Errorf("context.Cause(Context()) = %v, want %v", got, first)
	}
	if !errors.Is(err, first) || !errors.Is(err, second) {
		t.Errorf("Wait() = %v, want both causes", err)
	}
}

func TestTriggerCauseNilIsTrigger(t *testing.T) {
	m := newTest()
	m.TriggerCause(nil)
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if got, want := context.Cause(m.Context()).Error(), "shutdown: triggered"; got != want {
		t.Errorf("context.Cause = %q, want %q", got, want)
	}
}

func TestStoppingClosedWhenTriggerReturns(t *testing.T) {
	m := newTest()
	select {
	case <-m.Stopping():
		t.Fatal("Stopping() closed before Trigger")
	default:
	}
	m.Trigger()
	select {
	case <-m.Stopping():
	default:
		t.Fatal("Stopping() not closed when Trigger returned")
	}
	<-m.Done()
}

// wantPanic runs f and checks that it panics with the message want.
func wantPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		if got := fmt.Sprint(recover()); got != want {
			t.Errorf("panic = %q, want %q", got, want)
		}
	}()
	f()
}

// captureNotify is a notify seam that hands the signal channel to the test.
// newExiting returns a Manager whose signals come from sigs and whose
// forced exit sends its code on exited instead of exiting.
func newExiting(opts ...Option) (m *Manager, sigs chan<- os.Signal, exited chan int) {
	got := make(chan chan<- os.Signal, 1)
	exited = make(chan int, 1)
	m = New(append([]Option{seams{notify: captureNotify(got), exit: func(c int) { exited <- c }}}, opts...)...)
	return m, <-got, exited
}

func captureNotify(ch chan chan<- os.Signal) func(chan<- os.Signal, ...os.Signal) {
	return func(c chan<- os.Signal, _ ...os.Signal) { ch <- c }
}

func TestSignalStartsShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		var logs logBuffer
		m := New(seams{notify: captureNotify(got)}, WithLogger(logs.logger(slog.LevelInfo)))
		sigs := <-got
		sigs <- syscall.SIGTERM
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil: a signal is a clean start", err)
		}
		if got, want := context.Cause(m.Context()).Error(), "shutdown: received SIGTERM"; got != want {
			t.Errorf("context.Cause = %q, want %q", got, want)
		}
		if !strings.Contains(logs.String(), `cause="shutdown: received SIGTERM"`) {
			t.Errorf("log lacks the cause:\n%s", logs.String())
		}
	})
}

func TestSecondSignalExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m, sigs, exited := newExiting(WithLogger(logs.logger(slog.LevelInfo)))
		release := make(chan struct{})
		defer close(release)
		entered := make(chan struct{})
		m.Add("stuck-db", func(ctx context.Context) error { close(entered); <-release; return nil })
		sigs <- syscall.SIGTERM
		<-entered
		time.Sleep(2 * time.Second) // synctest: fake time, to show elapsed in the log
		sigs <- syscall.SIGINT
		if code := <-exited; code != 128+2 {
			t.Errorf("exit code = %d, want 130", code)
		}
		if s := logs.String(); !strings.Contains(s, "running.hook=stuck-db running.elapsed=2s") || !strings.Contains(s, "signal=SIGINT") {
			t.Errorf("log does not name the running hook and signal:\n%s", s)
		}
		release <- struct{}{}
		m.Wait()
	})
}

func TestSecondSignalWithoutForceExitCutsDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		m := New(seams{notify: captureNotify(got), exit: func(c int) { t.Errorf("exit(%d) called", c) }},
			WithLogger(discard), WithForceExit(false), WithDrainDelay(10*time.Second))
		sigs := <-got
		start := time.Now()
		sigs <- syscall.SIGTERM
		time.Sleep(time.Second)
		sigs <- syscall.SIGTERM
		<-m.Context().Done()
		if got := time.Since(start); got != time.Second {
			t.Errorf("drain ended after %v, want 1s (at the second signal)", got)
		}
		m.Wait()
	})
}

func TestSignalAfterTriggerCountsAsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		m := New(seams{notify: captureNotify(got), exit: func(c int) { t.Errorf("exit(%d) called for the first signal", c) }},
			WithLogger(discard), WithDrainDelay(time.Second))
		sigs := <-got
		m.Trigger()
		sigs <- syscall.SIGTERM
		m.Wait()
		if got, want := context.Cause(m.Context()).Error(), "shutdown: triggered"; got != want {
			t.Errorf("cause = %q, want %q", got, want)
		}
	})
}

func TestDrainDelayAndReadiness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(5*time.Second), WithTimeout(20*time.Second))
		ready := m.ReadinessHandler()
		probe := func() int {
			rec := httptest.NewRecorder()
			ready.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			return rec.Code
		}
		if c := probe(); c != 200 {
			t.Errorf("readiness before shutdown = %d, want 200", c)
		}
		var hookAt time.Duration
		start := time.Now()
		m.Add("http", func(context.Context) error { hookAt = time.Since(start); return nil })
		m.Trigger()
		if c := probe(); c != 503 {
			t.Errorf("readiness after Trigger = %d, want 503", c)
		}
		<-m.Context().Done()
		if got := time.Since(start); got != 5*time.Second {
			t.Errorf("Context done after %v, want the 5s drain delay", got)
		}
		m.Wait()
		if hookAt != 5*time.Second {
			t.Errorf("hook started at %v, want 5s", hookAt)
		}
	})
}

func TestDrainSkippedWhenRunReturnsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(5 * time.Second))
		start := time.Now()
		err := m.Run(func(ctx context.Context) error { return nil })
		if err != nil || time.Since(start) != 0 {
			t.Errorf("Run() = %v after %v, want nil at once (no drain)", err, time.Since(start))
		}
		if got, want := context.Cause(m.Context()).Error(), "shutdown: run function returned"; got != want {
			t.Errorf("cause = %q, want %q", got, want)
		}
	})
}

func TestKubernetesDefaultDrain(t *testing.T) {
	cases := []struct {
		opts []Option
		want time.Duration
	}{
		{nil, 5 * time.Second},
		{[]Option{WithTimeout(10 * time.Second)}, 2 * time.Second},
		{[]Option{WithDrainDelay(0)}, 0},
		{[]Option{WithTimeout(time.Second)}, 200 * time.Millisecond},
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	for _, tc := range cases {
		m := newTest(tc.opts...)
		if m.cfg.drain != tc.want {
			t.Errorf("New(%v) drain = %v, want %v", tc.opts, m.cfg.drain, tc.want)
		}
	}
	os.Unsetenv("KUBERNETES_SERVICE_HOST")
	if m := newTest(); m.cfg.drain != 0 {
		t.Errorf("drain outside Kubernetes = %v, want 0", m.cfg.drain)
	}
}

func TestAddDuringDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(time.Second))
		var r recorder
		m.Add("first", r.hook("first"))
		m.Trigger()
		m.Add("during-drain", r.hook("during-drain"))
		m.Wait()
		if got, want := r.list(), []string{"during-drain", "first"}; !slices.Equal(got, want) {
			t.Errorf("hooks ran %v, want %v", got, want)
		}
	})
}

func TestAddDuringHooksRunsNext(t *testing.T) {
	m := newTest()
	var r recorder
	m.Add("last", r.hook("last"))
	m.Add("not-yet", r.hook("not-yet"))
	m.Add("adder", func(context.Context) error {
		r.add("adder")
		m.Add("late", r.hook("late"))
		return nil
	})
	m.Trigger()
	m.Wait()
	if got, want := r.list(), []string{"adder", "late", "not-yet", "last"}; !slices.Equal(got, want) {
		t.Errorf("hooks ran %v, want %v", got, want)
	}
}

func TestAddJoinsRunningSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		var r recorder
		release := make(chan struct{})
		m.Add("after-set", r.hook("after-set"))
		m.Add("a", func(context.Context) error {
			m.Add("joiner", func(context.Context) error { r.add("joiner"); close(release); return nil }, Concurrent("s"))
			<-release // only the joiner, running beside a, releases it
			r.add("a")
			return nil
		}, Concurrent("s"))
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if got, want := r.list(), []string{"joiner", "a", "after-set"}; !slices.Equal(got, want) {
			t.Errorf("hooks ran %v, want %v", got, want)
		}
	})
}

func TestHookWaitingOnItsOwnAddWaitsUntilBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		ran := make(chan struct{})
		m.Add("waiter", func(ctx context.Context) error {
			m.Add("added", func(context.Context) error { close(ran); return nil })
			select {
			case <-ran:
				return errors.New("the added hook ran before its adder ended")
			case <-ctx.Done():
				return ctx.Err()
			}
		}, Timeout(2*time.Second))
		m.Trigger()
		err := m.Wait()
		if want := `shutdown: hook "waiter": timed out after 2s`; err == nil || err.Error() != want {
			t.Errorf("Wait() = %v, want %s", err, want)
		}
		<-ran
	})
}

func TestAddAfterFinishIsLogged(t *testing.T) {
	var logs logBuffer
	m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)))
	m.Trigger()
	m.Wait()
	m.Add("too-late", func(context.Context) error { t.Error("late hook ran"); return nil })
	logs.waitFor(t, `level=ERROR msg="shutdown: hook added after the last hook ended; not run" hook=too-late`)
}

func TestBadInputPanics(t *testing.T) {
	nop := func(context.Context) error { return nil }
	cases := []struct {
		name, want string
		f          func()
	}{
		{"nil hook", "shutdown: Add(\"x\"): hook is nil", func() { newTest().Add("x", nil) }},
		{"empty name", "shutdown: Add: name is empty", func() { newTest().Add("", nop) }},
		{"zero Timeout", "shutdown: Timeout: d must be positive, got 0s", func() { Timeout(0) }},
		{"negative Timeout", "shutdown: Timeout: d must be positive, got -1s", func() { Timeout(-time.Second) }},
		{"zero WithTimeout", "shutdown: WithTimeout: d must be positive, got 0s", func() { WithTimeout(0) }},
		{"negative drain", "shutdown: WithDrainDelay: d must not be negative, got -1s", func() { WithDrainDelay(-time.Second) }},
		{"drain not shorter", "shutdown: WithDrainDelay(25s) is not shorter than WithTimeout(25s)", func() { New(WithSignals(), WithDrainDelay(25*time.Second)) }},
		{"SIGKILL", "shutdown: WithSignals: SIGKILL cannot be caught", func() { WithSignals(os.Kill) }},
		{"nil signal", "shutdown: WithSignals: signal 0 is nil", func() { WithSignals(nil) }},
		{"nil logger", "shutdown: WithLogger: l is nil", func() { WithLogger(nil) }},
		{"empty set", "shutdown: Concurrent: set is empty", func() { Concurrent("") }},
		{"nil closer", "shutdown: Closer: c is nil", func() { Closer(nil) }},
		{"nil http server", "shutdown: HTTPServer: s is nil", func() { HTTPServer(nil) }},
		{"nil grpc server", "shutdown: GRPCServer: s is nil", func() { GRPCServer(nil) }},
		{"typed nil grpc server", "shutdown: GRPCServer: s is nil", func() { GRPCServer((*fakeGRPC)(nil)) }},
		{"nil Run fn", "shutdown: Run: fn is nil", func() { newTest().Run(nil) }},
		{"second Run", "shutdown: Run called twice", func() {
			m := newTest()
			m.Trigger()
			m.Run(nop)
			m.Run(nop)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantPanic(t, tc.want, tc.f) })
	}
}

type fakeGRPC struct {
	graceful chan struct{}
	stopped  chan struct{}
}

func (f *fakeGRPC) GracefulStop() { <-f.graceful }
func (f *fakeGRPC) Stop()         { close(f.stopped); close(f.graceful) }

func TestGRPCServerStopsAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeGRPC{graceful: make(chan struct{}), stopped: make(chan struct{})}
		m := newTest()
		m.Add("grpc", GRPCServer(f), Timeout(time.Second))
		m.Trigger()
		err := m.Wait()
		<-f.stopped
		if want := `shutdown: hook "grpc": timed out after 1s: grpc server: GracefulStop had not finished at the deadline; stopped: context deadline exceeded`; err == nil || err.Error() != want {
			t.Errorf("Wait() = %v, want %s", err, want)
		}
	})
}

func TestRunFailingFn(t *testing.T) {
	m := newTest(WithDrainDelay(time.Hour), WithTimeout(2*time.Hour))
	errListen := errors.New("listen tcp :80: bind: permission denied")
	err := m.Run(func(context.Context) error { return errListen })
	var he *HookError
	if !errors.Is(err, errListen) || !errors.As(err, &he) || he.Name != "run" || err.Error() != "shutdown: run function: "+errListen.Error() {
		t.Errorf("Run() = %v, want fn's error as the HookError of the run function", err)
	}
	if got, want := context.Cause(m.Context()).Error(), "shutdown: run function returned: "+errListen.Error(); got != want {
		t.Errorf("cause = %q, want %q", got, want)
	}
}

func TestRunCleanErrorsAreDropped(t *testing.T) {
	for _, fnErr := range []error{http.ErrServerClosed, context.Canceled, fmt.Errorf("worker: %w", context.Canceled)} {
		m := newTest()
		// Trigger from fn: a Trigger before Run could start the hooks first,
		// and Run would then return nil without calling fn.
		if err := m.Run(func(ctx context.Context) error { m.Trigger(); <-ctx.Done(); return fnErr }); err != nil {
			t.Errorf("Run(fn returning %v) = %v, want nil", fnErr, err)
		}
	}
	// fn returning the shutdown's own cause is clean too.
	m := newTest()
	cause := errors.New("reload")
	if err := m.Run(func(ctx context.Context) error { m.TriggerCause(cause); <-ctx.Done(); return context.Cause(ctx) }); !errors.Is(err, cause) || err.Error() != "reload" {
		t.Errorf("Run(fn returning the TriggerCause error) = %v, want that error once", err)
	}
	m = newTest()
	if err := m.Run(func(ctx context.Context) error { m.Trigger(); <-ctx.Done(); return context.Cause(ctx) }); err != nil {
		t.Errorf("Run(fn returning the cause) = %v, want nil", err)
	}
}

func TestRunAbandonedAtBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithTimeout(3 * time.Second))
		release := make(chan struct{})
		defer close(release)
		start := time.Now()
		err := m.Run(func(context.Context) error { m.Trigger(); <-release; return nil })
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("Run returned after %v, want the 3s budget", got)
		}
		var he *HookError
		if !errors.As(err, &he) || he.Name != "run" || !errors.Is(err, ErrTimeout) {
			t.Errorf("Run() = %v, want HookError run with ErrTimeout", err)
		}
		if want := `shutdown: run function: timed out after the 3s budget`; err.Error() != want {
			t.Errorf("Run() = %q, want %q", err, want)
		}
	})
}

func TestRunAfterHooksStartedDoesNotCallFn(t *testing.T) {
	m := newTest()
	entered, release := make(chan struct{}), make(chan struct{})
	m.Add("h", func(context.Context) error { close(entered); <-release; return nil })
	m.Trigger()
	<-entered
	go close(release)
	if err := m.Run(func(context.Context) error { t.Error("fn called"); return nil }); err != nil {
		t.Errorf("Run() = %v, want the shutdown's result, nil", err)
	}
}

// TestDatabaseThenServer is the natural order of DESIGN step 5: the database
// is added first with AfterRun, the server second. The server's hook runs
// first, ListenAndServe returns, fn returns, then the database closes,
// with the request in flight answered.
func TestDatabaseThenServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(WithSignals(), WithLogger(discard), WithTimeout(time.Minute))
	var r recorder
	inHandler, finish := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		close(inHandler)
		<-finish
		r.add("request done")
		io.WriteString(w, "ok")
	}))}
	m.Add("db", func(context.Context) error { r.add("db closed"); return nil }, AfterRun())
	drain := HTTPServer(srv) // before srv serves: it sets srv.ConnState
	m.Add("http", func(ctx context.Context) error {
		close(finish) // let the request in flight finish while the hook drains
		err := drain(ctx)
		r.add("http drained")
		return err
	})
	resp := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			resp <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		resp <- fmt.Sprintf("%s close=%t", b, res.Close)
	}()
	go func() { <-inHandler; m.Trigger() }()
	err = m.Run(func(ctx context.Context) error {
		err := srv.Serve(ln)
		r.add("serve returned")
		return err
	})
	if err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if got := <-resp; got != "ok close=true" {
		t.Errorf("response = %q, want ok with Connection: close (written after Stopping)", got)
	}
	got := r.list()
	if got[len(got)-1] != "db closed" || slices.Index(got, "serve returned") > slices.Index(got, "db closed") ||
		slices.Index(got, "request done") > slices.Index(got, "http drained") {
		t.Errorf("order = %v, want the request answered before the drain ended, serve returned before db closed", got)
	}
}

// TestAfterRunFlushNoRace is the writer and flush of DESIGN step 5: a
// writer appends to a buffer until ctx is done; the AfterRun flush reads it.
// -race proves the flush never overlaps the writer.
func TestAfterRunFlushNoRace(t *testing.T) {
	m := newTest()
	var buf []int
	var flushed int
	m.Add("flush", func(context.Context) error { flushed = len(buf); return nil }, AfterRun())
	wrote := make(chan struct{})
	go func() { <-wrote; m.Trigger() }()
	var n int
	err := m.Run(func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				n = len(buf)
				return nil
			default:
			}
			buf = append(buf, len(buf))
			if len(buf) == 100 {
				close(wrote)
			}
		}
	})
	if err != nil || flushed != n || n < 100 {
		t.Errorf("Run() = %v; flushed %d of %d records", err, flushed, n)
	}
}

func TestAfterRunWithoutRunDoesNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		var r recorder
		m.Add("flush", r.hook("flush"), AfterRun())
		m.Trigger()
		start := time.Now()
		if err := m.Wait(); err != nil || time.Since(start) != 0 {
			t.Errorf("Wait() = %v after %v, want nil at once", err, time.Since(start))
		}
	})
}

func TestWarnsNearBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m := New(WithSignals(), WithLogger(logs.logger(slog.LevelDebug)))
		m.Add("slowish", func(context.Context) error { time.Sleep(850 * time.Millisecond); return nil }, Timeout(time.Second))
		m.Add("quick", func(context.Context) error { return nil })
		m.Trigger()
		m.Wait()
		s := logs.String()
		for _, want := range []string{
			`level=INFO msg="shutdown: started" cause="shutdown: triggered" budget=25s`,
			`level=DEBUG msg="shutdown: hook started" hook=quick`,
			`level=INFO msg="shutdown: hook finished" hook=quick elapsed=0s outcome=ok`,
			`level=WARN msg="shutdown: hook finished close to its bound" hook=slowish elapsed=850ms outcome=ok bound=1s`,
			`level=INFO msg="shutdown: finished" elapsed=850ms`,
		} {
			if !strings.Contains(s, want) {
				t.Errorf("log lacks %s:\n%s", want, s)
			}
		}
	})
}

func TestOptionStrings(t *testing.T) {
	for _, tc := range []struct {
		s    fmt.Stringer
		want string
	}{
		{WithTimeout(25 * time.Second), "shutdown.WithTimeout(25s)"},
		{WithDrainDelay(5 * time.Second), "shutdown.WithDrainDelay(5s)"},
		{WithSignals(syscall.SIGTERM, os.Interrupt), "shutdown.WithSignals(SIGTERM, SIGINT)"},
		{WithForceExit(false), "shutdown.WithForceExit(false)"},
		{WithLogger(discard), "shutdown.WithLogger(...)"},
		{Timeout(time.Second), "shutdown.Timeout(1s)"},
		{AfterRun(), "shutdown.AfterRun()"},
		{Concurrent("servers"), `shutdown.Concurrent("servers")`},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestCloser(t *testing.T) {
	m := newTest()
	pr, pw := io.Pipe()
	m.Add("pipe", Closer(pw))
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after Closer hook = %v, want EOF", err)
	}
}
