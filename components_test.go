package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// A component that returns nil before any signal (a job that finished)
// shuts the service down cleanly, at once: nothing is left to drain.
func TestComponentReturningNilShutsDownWithoutDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(5*time.Second), WithTimeout(25*time.Second))
		var r recorder
		m.Add("db", r.hook("db"), AfterRun())
		start := time.Now()
		m.Go("migrate", func(context.Context) error { return nil })
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Wait returned after %v, want at once (no drain delay)", d)
		}
		if got, want := context.Cause(m.Context()).Error(), `shutdown: component "migrate" returned`; got != want {
			t.Errorf("cause = %q, want %q", got, want)
		}
		if got := r.list(); !slices.Equal(got, []string{"db"}) {
			t.Errorf("hooks ran %v, want [db]", got)
		}
	})
}

// A component that fails at startup (a port in use) stops the others: the
// HTTP component, still serving, keeps serving through the drain delay,
// its hook stops it, and the result names the failed component alone
// (http.ErrServerClosed from the other is a clean stop).
func TestComponentFailingStopsTheOthers(t *testing.T) {
	for _, drain := range []time.Duration{0, 2 * time.Second} {
		t.Run(fmt.Sprint("drain=", drain), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newTest(WithDrainDelay(drain), WithTimeout(10*time.Second))
				errBind := errors.New("listen tcp :9090: bind: address already in use")
				stopHTTP := make(chan struct{})
				var r recorder
				m.Add("http", func(context.Context) error { r.add("http hook"); close(stopHTTP); return nil })
				m.Go("http", func(context.Context) error { <-stopHTTP; return http.ErrServerClosed })
				start := time.Now()
				m.Go("grpc", func(context.Context) error { return errBind })
				err := m.Wait()
				if want := `shutdown: component "grpc": ` + errBind.Error(); err == nil || err.Error() != want || !errors.Is(err, errBind) {
					t.Errorf("Wait() = %v, want %s", err, want)
				}
				var he *HookError
				if !errors.As(err, &he) || he.Name != "grpc" {
					t.Errorf("Wait() = %v, want a HookError named grpc", err)
				}
				if got, want := context.Cause(m.Context()).Error(), `shutdown: component "grpc" returned: `+errBind.Error(); got != want {
					t.Errorf("cause = %q, want %q", got, want)
				}
				if !errors.Is(context.Cause(m.Context()), errBind) {
					t.Errorf("cause does not wrap the component's error")
				}
				// With another component still serving, the drain runs.
				if d := time.Since(start); d != drain {
					t.Errorf("Wait returned after %v, want the drain delay, %v", d, drain)
				}
				if rep := m.Report(); rep.Drain != drain {
					t.Errorf("Report().Drain = %v, want %v", rep.Drain, drain)
				}
				if got := r.list(); !slices.Equal(got, []string{"http hook"}) {
					t.Errorf("hooks ran %v, want the http hook", got)
				}
			})
		})
	}
}

// A worker component consumes jobs, each writing to a resource that an
// AfterRun hook closes. SIGTERM while a job is in flight: the job
// completes, the worker returns, then the resource closes. No job is lost
// or processed twice, and the race detector stays quiet.
func TestWorkerFinishesJobBeforeResourceCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan chan<- os.Signal, 1)
		m := New(seams{notify: captureNotify(got)}, WithLogger(discard), WithTimeout(10*time.Second))
		sigs := <-got
		jobs := make(chan int, 100)
		for i := range 100 {
			jobs <- i
		}
		close(jobs)
		var db struct {
			mu     sync.Mutex
			rows   []int
			closed bool
		}
		write := func(id int) {
			db.mu.Lock()
			defer db.mu.Unlock()
			if db.closed {
				t.Errorf("job %d written after the database closed", id)
			}
			db.rows = append(db.rows, id)
		}
		m.Add("db", func(context.Context) error {
			db.mu.Lock()
			defer db.mu.Unlock()
			db.closed = true
			return nil
		}, AfterRun())
		inFlight := make(chan int)
		m.Go("worker", func(ctx context.Context) error {
			for ctx.Err() == nil { // a select would pick a ready job half the time
				select {
				case <-ctx.Done():
					return nil
				case id, ok := <-jobs:
					if !ok {
						return nil
					}
					if id == 10 {
						inFlight <- id
					}
					time.Sleep(100 * time.Millisecond) // the job's work
					write(id)
				}
			}
			return nil
		})
		<-inFlight
		sigs <- syscall.SIGTERM
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v, want nil", err)
		}
		if !db.closed {
			t.Error("database not closed")
		}
		if n := len(db.rows); n != 11 {
			t.Errorf("%d jobs written, want 11 (0 to 10, the one in flight included)", n)
		}
		left := 0
		for range jobs {
			left++
		}
		seen := make(map[int]bool)
		for _, id := range db.rows {
			if seen[id] {
				t.Errorf("job %d written twice", id)
			}
			seen[id] = true
		}
		if len(db.rows)+left != 100 {
			t.Errorf("%d written + %d left in the queue, want 100: a job was lost", len(db.rows), left)
		}
	})
}

// blockedInPoll is a component's loop that ignores its context.
func blockedInPoll(release chan struct{}) { <-release }

// blockedInServiceGoroutine is a goroutine of the service, not of the
// component: the component's stack must not show it.
func blockedInServiceGoroutine(release chan struct{}) { <-release }

// A component that ignores its context is abandoned at the end of the
// budget, named, with its own goroutine's stack, and Wait is not late.
func TestComponentIgnoringContextIsAbandonedAtBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		var logs logBuffer
		m := New(WithSignals(), WithTimeout(2*time.Second), WithLogger(logs.logger(slog.LevelInfo)))
		m.Go("poller", func(ctx context.Context) error {
			go blockedInServiceGoroutine(release)
			blockedInPoll(release)
			return nil
		})
		synctest.Wait()
		start := time.Now()
		m.Trigger()
		err := m.Wait()
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("Wait returned after %v, want the 2s budget", d)
		}
		var he *HookError
		if !errors.As(err, &he) || he.Name != "poller" || !errors.Is(err, ErrTimeout) {
			t.Fatalf("Wait() = %v, want poller timed out", err)
		}
		if want := `shutdown: component "poller": timed out after the 2s budget`; err.Error() != want {
			t.Errorf("Wait() = %q, want %q", err, want)
		}
		st := string(he.Stack)
		if !strings.Contains(st, "blockedInPoll") || strings.Contains(st, "blockedInServiceGoroutine") {
			t.Errorf("Stack = \n%s\nwant blockedInPoll only, not the goroutine it started", st)
		}
		rows := m.Report().Hooks
		if len(rows) != 1 || !rows[0].Component || rows[0].Outcome != "timeout" {
			t.Errorf("Report().Hooks = %+v, want one component row, timed out", rows)
		}
		logs.waitFor(t, "component abandoned at the end of the budget", "component=poller", "blockedInPoll")
	})
}

// Components sharing a name (a pool of workers) are all waited for.
func TestComponentsShareAName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		var r recorder
		for i := range 3 {
			m.Go("worker", func(ctx context.Context) error {
				<-ctx.Done()
				time.Sleep(time.Duration(i) * time.Second)
				r.add(fmt.Sprint("worker ", i))
				return nil
			})
		}
		m.Add("queue", r.hook("queue"), AfterRun())
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if got := r.list(); len(got) != 4 || got[3] != "queue" {
			t.Errorf("ran %v, want the three workers, then queue", got)
		}
	})
}

// Go during the drain delay starts its component; from the hooks' start
// on, Go logs and does not start it, since nothing could stop it.
func TestGoLateIsLoggedNotRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m := New(WithSignals(), WithDrainDelay(time.Second), WithLogger(logs.logger(slog.LevelInfo)))
		ran := make(chan string, 2)
		m.Add("adder", func(context.Context) error {
			m.Go("too-late", func(context.Context) error { ran <- "too-late"; return nil })
			return nil
		})
		m.Trigger()
		m.Go("in-drain", func(ctx context.Context) error { ran <- "in-drain"; <-ctx.Done(); return nil })
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		close(ran)
		if got := slices.Collect(func(yield func(string) bool) {
			for s := range ran {
				yield(s)
			}
		}); !slices.Equal(got, []string{"in-drain"}) {
			t.Errorf("components ran %v, want [in-drain]", got)
		}
		logs.waitFor(t, `level=ERROR msg="shutdown: component started after the hooks' start; not run" component=too-late`)
	})
}

func TestGoBadInputPanics(t *testing.T) {
	m := newTest()
	defer m.Release()
	wantPanic(t, "shutdown: Go: name is empty", func() { m.Go("", func(context.Context) error { return nil }) })
	wantPanic(t, `shutdown: Go("worker"): fn is nil`, func() { m.Go("worker", nil) })
}

// Release before a shutdown ends the Manager: Done closed, Wait and Run nil,
// Run's fn not called, the Context cancelled with "shutdown: released", and
// a later Trigger, Add or Go only logged.
func TestReleaseBeforeShutdownEndsTheManager(t *testing.T) {
	var logs logBuffer
	m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)))
	m.Add("hook", func(context.Context) error { t.Error("hook ran after Release"); return nil })
	m.Release()
	m.Release() // idempotent
	<-m.Done()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if err := m.Run(func(context.Context) error { t.Error("fn called after Release"); return nil }); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if got := context.Cause(m.Context()); got == nil || got.Error() != "shutdown: released" {
		t.Errorf("cause = %v, want shutdown: stopped", got)
	}
	m.Trigger()
	m.Add("late", func(context.Context) error { t.Error("late hook ran"); return nil })
	m.Go("late", func(context.Context) error { t.Error("late component ran"); return nil })
	logs.waitFor(t, "Trigger after Release", "hook added after Release; not run", "component started after Release; not run")
	select {
	case <-m.Stopping():
		t.Error("Stopping() closed by Release, want it open: no shutdown started")
	default:
	}
}

// Release after a shutdown has started only stops catching signals: the
// shutdown runs on, and a second signal no longer forces an exit.
func TestReleaseDuringShutdownOnlyStopsSignals(t *testing.T) {
	got := make(chan chan<- os.Signal, 1)
	m := New(seams{notify: captureNotify(got), exit: func(int) { t.Error("forced exit after Release") }}, WithLogger(discard))
	sigs := <-got
	release := make(chan struct{})
	m.Add("slow", func(context.Context) error { <-release; return nil })
	sigs <- syscall.SIGTERM
	<-m.Stopping()
	m.Release()
	select {
	case sigs <- syscall.SIGTERM: // buffered: nobody reads it any more
	default:
	}
	close(release)
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

// 100 Managers released with Release leave no goroutine behind: not the
// signal watcher, not the log goroutine.
func TestReleasedManagersLeakNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	for range 100 {
		m := New(WithLogger(discard)) // the default signals, through signal.Notify
		m.Release()
		m.Trigger() // logged, on a goroutine that ends with its record
	}
	goleak.VerifyNone(t, before)
}

// A worker that takes a second to finish its job after Context() is done
// returns after the last hook has ended (here: there are no hooks). Its end,
// and its failure, must be logged like any component's (issue 11: "The
// report and logs show components like hooks").
func TestComponentEndingAfterLastHookIsLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)), WithTimeout(10*time.Second))
		errFlush := errors.New("flush: broken pipe")
		m.Go("worker", func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(time.Second) // the job in flight
			return errFlush
		})
		m.Trigger()
		if err := m.Wait(); !errors.Is(err, errFlush) {
			t.Fatalf("Wait() = %v, want %v", err, errFlush)
		}
		synctest.Wait() // the log goroutine has handled every record
		out := logs.String()
		if !strings.Contains(out, `msg="shutdown: component failed" component=worker`) {
			t.Errorf("no record of the worker's end in the log:\n%s", out)
		}
	})
}

// A pool of workers consumes a queue; the queue is closed (the batch is
// done), so every worker returns nil at once. The first to return starts
// shutdown; no component is left running, so nothing is left to drain and
// the drain delay must be skipped (DESIGN step 3, "Components").
func TestDrainSkippedWhenComponentsReturnTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest(WithDrainDelay(5*time.Second), WithTimeout(25*time.Second))
		jobs := make(chan int)
		for range 2 {
			m.Go("worker", func(context.Context) error {
				for range jobs {
				}
				return nil
			})
		}
		start := time.Now()
		close(jobs)
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Wait returned after %v, want at once: no component was left to drain (Report().Drain = %v)", d, m.Report().Drain)
		}
	})
}

// A worker returns when Context is done, after the last hook has ended
// (here there are no hooks), and shutdown waits for it. Its record must be
// in the log when Wait returns, before "shutdown: finished": a service
// that exits right after Wait (os.Exit) must not lose it, and the last
// record must say that shutdown has finished.
func TestComponentEndLoggedBeforeShutdownFinished(t *testing.T) {
	const runs = 2000
	late := 0
	var last string
	for range runs {
		var logs logBuffer
		m := New(WithSignals(), WithLogger(logs.logger(slog.LevelInfo)))
		m.Go("worker", func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
		m.Trigger()
		if err := m.Wait(); err != nil {
			t.Fatalf("Wait() = %v, want nil", err)
		}
		out := logs.String()
		end := strings.Index(out, `msg="shutdown: component finished" component=worker`)
		fin := strings.Index(out, `msg="shutdown: finished"`)
		if end < 0 || fin < 0 || end > fin {
			late++
			last = out
		}
	}
	if late > 0 {
		t.Errorf("in %d of %d shutdowns the worker's end was not logged before \"shutdown: finished\" when Wait returned; last log:\n%s", late, runs, last)
	}
}
