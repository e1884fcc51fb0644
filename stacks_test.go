package shutdown

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// blockedInFlushToDisk is a user function that never finishes; its name must
// appear in the stack the manager reports.
func blockedInFlushToDisk(release chan struct{}) { <-release }

// blockedInCloseDatabase is another, for Run's fn.
func blockedInCloseDatabase(release chan struct{}) { <-release }

func TestStuckHookStackNamesItsFunction(t *testing.T) {
	cases := []struct {
		name string
		opts []HookOption
	}{
		{"budget-bound", nil},
		{"own-timeout", []HookOption{Timeout(time.Second)}},
		{"set-member", []HookOption{Concurrent("s"), Timeout(time.Second)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				defer close(release)
				var logs logBuffer
				m := New(WithSignals(), WithTimeout(2*time.Second), WithLogger(logs.logger(slog.LevelInfo)))
				m.Add("flush", func(ctx context.Context) error {
					blockedInFlushToDisk(release)
					return nil
				}, tc.opts...)
				m.Trigger()
				err := m.Wait()
				var he *HookError
				if !errors.As(err, &he) || !errors.Is(err, ErrTimeout) {
					t.Fatalf("Wait() = %v, want a timed-out HookError", err)
				}
				if !strings.Contains(string(he.Stack), "shutdown.blockedInFlushToDisk") || !strings.Contains(string(he.Stack), "stacks_test.go:") {
					t.Errorf("Stack does not name the blocking function:\n%s", he.Stack)
				}
				if strings.Contains(string(he.Stack), "shutdown.(*runner)") {
					t.Errorf("Stack shows the library's own frames below the hook:\n%s", he.Stack)
				}
				if l := logs.String(); !strings.Contains(l, "outcome=timeout") || !strings.Contains(l, "blockedInFlushToDisk") {
					t.Errorf("log lacks the stack:\n%s", l)
				}
			})
		})
	}
}

func TestStuckRunStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(time.Second))
		// Trigger from fn: a Trigger before Run could start the hooks first,
		// and Run would then not call fn at all.
		err := m.Run(func(ctx context.Context) error { m.Trigger(); blockedInCloseDatabase(release); return nil })
		var he *HookError
		if !errors.As(err, &he) || he.Name != "run" || !strings.Contains(string(he.Stack), "blockedInCloseDatabase") {
			t.Errorf("Run() = %v with stack\n%s\nwant run's stack naming blockedInCloseDatabase", err, he.Stack)
		}
	})
}

func TestStackCapturesAreCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(time.Second))
		for range maxCaptures + 2 {
			m.Add("stuck", func(context.Context) error { <-release; return nil }, Concurrent("all"))
		}
		m.Trigger()
		err := m.Wait()
		with := 0
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if len(e.(*HookError).Stack) > 0 {
				with++
			}
		}
		if with != maxCaptures {
			t.Errorf("%d abandoned hooks have stacks, want the cap, %d", with, maxCaptures)
		}
	})
}

func TestSecondSignalLogsStacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		m, sigs, exited := newExiting(WithLogger(logs.logger(slog.LevelInfo)))
		release, entered := make(chan struct{}), make(chan struct{})
		m.Add("flush", func(ctx context.Context) error { close(entered); blockedInFlushToDisk(release); return nil })
		sigs <- syscall.SIGTERM
		<-entered
		sigs <- syscall.SIGTERM
		if code := <-exited; code != 143 {
			t.Errorf("exit code = %d, want 143", code)
		}
		if l := logs.String(); !strings.Contains(l, "running.hook=flush") || !strings.Contains(l, "blockedInFlushToDisk") || !strings.Contains(l, "code=143") {
			t.Errorf("second signal's log lacks the running hook's stack:\n%s", l)
		}
		close(release)
		m.Wait()
	})
}

// blockedInLeftover is a goroutine that an earlier hook left running.
func blockedInLeftover(release chan struct{}) { <-release }

// blockedInHelper is a goroutine that the stuck hook itself started.
func blockedInHelper(release chan struct{}) { <-release }

// A stuck hook's stack shows its own goroutine and the goroutines it
// started, not the goroutines an earlier hook left behind (each hook runs
// on a goroutine of its own, found by its id).
func TestStuckHookStackNamesOnlyItsGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(time.Second))
		m.Add("stuck", func(context.Context) error {
			go blockedInHelper(release)
			blockedInFlushToDisk(release)
			return nil
		})
		m.Add("earlier", func(context.Context) error { go blockedInLeftover(release); return nil })
		m.Trigger()
		var he *HookError
		if err := m.Wait(); !errors.As(err, &he) || he.Name != "stuck" {
			t.Fatalf("Wait() = %v, want stuck timed out", err)
		}
		st := string(he.Stack)
		own, helper := strings.Index(st, "blockedInFlushToDisk"), strings.Index(st, "blockedInHelper")
		if own < 0 || helper < own || strings.Contains(st, "blockedInLeftover") {
			t.Errorf("Stack =\n%s\nwant blockedInFlushToDisk, then blockedInHelper, and no blockedInLeftover", st)
		}
	})
}

// No pprof label of the library's reaches the goroutines that Run's
// function, a component or a hook start: they would show in the service's
// own stacks and CPU profiles.
func TestNoLabelLeaksIntoServiceGoroutines(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	m := newTest()
	spawn := func() { go func() { started <- struct{}{}; <-release }() }
	m.Add("hook", func(context.Context) error { spawn(); return nil })
	m.Go("worker", func(ctx context.Context) error { spawn(); <-ctx.Done(); return nil })
	done := make(chan error, 1)
	go func() { done <- m.Run(func(ctx context.Context) error { spawn(); <-ctx.Done(); return nil }) }()
	<-started
	<-started
	m.Trigger()
	<-started
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 1)
	close(release)
	if strings.Contains(buf.String(), "# labels:") {
		t.Errorf("goroutine profile carries labels:\n%s", buf.String())
	}
	if err := <-done; err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// Stack text is read robustly: file paths with spaces keep their frames,
// argument lists and pc offsets are cut, and the library's own frames are
// found by the path the binary was built from, so a fork under another
// module path is cut as well.
func TestParseStacks(t *testing.T) {
	const fork = "example.com/fork/shutdown."
	text := `goroutine 7 [chan receive, 2 minutes]:
main.flush(0xc000012345)
	/home/me/My Projects/svc/main.go:12 +0x1d
main.(*DB).Close(...)
	/home/me/My Projects/svc/db.go:40
` + fork + `(*runner).runHook.func1()
	/go/pkg/mod/example.com/fork/shutdown/runner.go:300 +0x25
` + fork + `(*task).run(0xc0000a4000, 0xc0000b0000, 0xc0000b2000)
	/go/pkg/mod/example.com/fork/shutdown/runner.go:50 +0x90
created by ` + fork + `(*runner).runHook in goroutine 6
	/go/pkg/mod/example.com/fork/shutdown/runner.go:280 +0x1aa

goroutine 9 gp=0xc000003c00 m=nil [select]:
main.helper()
	/home/me/My Projects/svc/main.go:30 +0x44
created by main.flush in goroutine 7
	/home/me/My Projects/svc/main.go:11 +0x30
`
	got := parseStacks(text, fork)
	want := []goroutine{
		{id: 7, parent: 6, frames: "main.flush\n\t/home/me/My Projects/svc/main.go:12\nmain.(*DB).Close\n\t/home/me/My Projects/svc/db.go:40\n"},
		{id: 9, parent: 7, frames: "main.helper\n\t/home/me/My Projects/svc/main.go:30\n"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseStacks() =\n%+v\nwant\n%+v", got, want)
	}
	// The prefix the library uses is its own functions' package.
	if pkgPrefix != "github.com/gracefulgo/shutdown." {
		t.Errorf("pkgPrefix = %q, want this package's path", pkgPrefix)
	}
}

// parked blocks on ch with n frames above it, like a service's goroutine
// (a connection's reader, a worker) waiting deep in its call stack.
func parked(n int, ch chan struct{}) {
	if n == 0 {
		<-ch
		return
	}
	parked(n-1, ch)
}

// stopTheWorldPauses counts the non-GC stop-the-world pauses so far.
func stopTheWorldPauses() uint64 {
	s := []metrics.Sample{{Name: "/sched/pauses/total/other:seconds"}}
	metrics.Read(s)
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

// WithTimeout documents that Wait returns within the budget plus at most 4
// stack captures, "each stopping the world for about 7ms per 1,000
// goroutines". In a service with a few thousand goroutines, one abandoned
// hook must then cost one stop of the world, not one per doubling of a
// 64 KiB buffer (each a full dump of every goroutine).
func TestAbandonedHookStopsTheWorldOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		service := make(chan struct{})
		defer close(service)
		for range 2000 {
			go parked(30, service)
		}
		m := newTest(WithTimeout(10 * time.Second))
		release := make(chan struct{})
		defer close(release)
		m.Add("stuck", func(context.Context) error { <-release; return nil }, Timeout(time.Second))
		synctest.Wait()
		before := stopTheWorldPauses()
		m.Trigger()
		err := m.Wait()
		pauses := stopTheWorldPauses() - before
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Wait() = %v, want ErrTimeout", err)
		}
		if pauses > 2 {
			t.Errorf("one abandoned hook stopped the world %d times, want 1 (each stop formats all 2,000 goroutines)", pauses)
		}
	})
}

// closeListener and drainIdleConns are the two members of a Concurrent set;
// the first adds the second once it runs (DESIGN: a late hook whose set is
// running joins it). Both ignore their context.
func closeListener(m *Manager, release chan struct{}) Hook {
	return func(context.Context) error {
		m.Add("idle-conns", drainIdleConns(release), Concurrent("conns"))
		<-release
		return nil
	}
}

func drainIdleConns(release chan struct{}) Hook {
	return func(context.Context) error {
		<-release
		return nil
	}
}

// The stack of the abandoned "listener" hook names its own goroutine and the
// goroutines it started, not another hook's, and none of the library's
// frames (DESIGN "What bad input and faults get").
func TestStackOfHookExcludesTheHookItAdded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(10 * time.Second))
		m.Add("listener", closeListener(m, release), Concurrent("conns"))
		m.Trigger()
		err := m.Wait()
		var listener []byte
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if he := (*HookError)(nil); errors.As(e, &he) && he.Name == "listener" {
				listener = he.Stack
			}
		}
		if !bytes.Contains(listener, []byte("closeListener")) {
			t.Fatalf("Wait() = %v; want listener's stack, got:\n%s", err, listener)
		}
		var named []string
		for _, other := range []string{"drainIdleConns", "(*runner).runHook", "errgroup"} {
			if bytes.Contains(listener, []byte(other)) {
				named = append(named, other)
			}
		}
		if len(named) > 0 {
			t.Errorf("stack of hook listener names %q:\n%s", named, listener)
		}
	})
}

// A hook abandoned before its goroutine has run (a hook reached in the last
// moments of the budget, or with a tiny Timeout) has no user frames yet. Its
// Stack must not name other goroutines: not the test's, not main's.
func TestStackOfHookAbandonedBeforeItRanNamesNoOtherGoroutine(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for range 20 {
		m := newTest()
		m.Add("tiny", func(ctx context.Context) error { <-ctx.Done(); return nil }, Timeout(1))
		m.Trigger()
		err := m.Wait()
		var he *HookError
		if !errors.As(err, &he) || !errors.Is(err, ErrTimeout) {
			continue // the hook's goroutine ran first this time
		}
		if bytes.Contains(he.Stack, []byte("testing.")) || bytes.Contains(he.Stack, []byte("TestStackOfHookAbandoned")) {
			t.Fatalf("Stack of the abandoned hook names other goroutines (the test runner's):\n%s", he.Stack)
		}
	}
}

// flushStuck is a subsystem's hook that never returns on its own.
func flushStuck(release chan struct{}) Hook {
	return func(context.Context) error {
		<-release
		return nil
	}
}

// A subsystem with a Manager of its own is shut down by a hook of the
// service's Manager: the hook triggers it and waits. When that hook is
// abandoned, its stack must show where the subsystem is stuck (flushStuck):
// the subsystem's goroutines were started by the hook, through Trigger,
// not joined to the service's own hooks through Add.
func TestStackOfHookShowsNestedManagerItWaitsFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		sub := newTest(WithTimeout(10 * time.Second))
		sub.Add("flush", flushStuck(release))
		m := newTest(WithTimeout(20 * time.Second))
		m.Add("subsystem", func(context.Context) error {
			sub.Trigger()
			return sub.Wait()
		}, Timeout(time.Second))
		m.Trigger()
		err := m.Wait()
		var stack []byte
		if he := (*HookError)(nil); errors.As(err, &he) && he.Name == "subsystem" {
			stack = he.Stack
		}
		if !bytes.Contains(stack, []byte("flushStuck")) {
			t.Errorf("Wait() = %v; the subsystem hook's stack does not show where the subsystem is stuck (flushStuck):\n%s", err, stack)
		}
	})
}
