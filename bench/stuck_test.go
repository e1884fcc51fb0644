package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gracefulgo/shutdown"
)

// Bounds of TestStuckHook, in the bubble's fake time.
const (
	stuckHookBound = 500 * time.Millisecond // per-hook bound where the library has one
	stuckBudget    = time.Second            // total budget; fx: Stop's context
	stuckWait      = 2 * time.Second        // how long the test waits for a return
)

// stuckOutcome is one row of TestStuckHook's table.
type stuckOutcome struct {
	returned  bool
	after     time.Duration // from the trigger to the return
	err       error
	otherRan  bool // the other hook ran before the return
	otherEver bool // the other hook ran at all, once the stuck one was released
}

// TestStuckHook runs, for each library, a shutdown of two hooks where the one
// that runs first never returns on its own, and records whether and when the
// library comes back and whether the other hook still runs. It runs in a
// testing/synctest bubble, so the times are exact and the test takes no
// wall time: the bounds are 500 ms per hook (hand-rolled, shutdown's
// Timeout), a 1 s budget (fx's Stop context), and a 2 s wait before the test
// gives up and releases the stuck hook. The table is logged (go test -v).
func TestStuckHook(t *testing.T) {
	// os/signal starts its reader goroutine on the first Notify; fx's
	// app.Wait calls Notify, and a reader started inside the bubble would
	// never exit. Start it here, outside.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	signal.Stop(c)

	want := map[string]func(o stuckOutcome) error{
		"handrolled": func(o stuckOutcome) error {
			return expect(o, true, stuckHookBound, ErrHookTimeout, true)
		},
		"oklog": func(o stuckOutcome) error {
			if o.returned {
				return fmt.Errorf("returned after %v; oklog/run has no timeout", o.after)
			}
			if !o.otherEver {
				return errors.New("the other hook never ran after the release")
			}
			return nil
		},
		"fx": func(o stuckOutcome) error {
			if err := expect(o, true, stuckBudget, context.DeadlineExceeded, false); err != nil {
				return err
			}
			if o.otherEver {
				return errors.New("the other hook ran after the release")
			}
			return nil
		},
		"shutdown": func(o stuckOutcome) error {
			return expect(o, true, stuckHookBound, shutdown.ErrTimeout, true)
		},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-11s %-9s %-8s %-10s %s\n", "library", "returned", "after", "other hook", "error")
	for _, lib := range Libs {
		var o stuckOutcome
		synctest.Test(t, func(t *testing.T) { o = runStuck(lib) })
		if err := want[lib.Name](o); err != nil {
			t.Errorf("%s: %v", lib.Name, err)
		}
		after, other := o.after.String(), "ran"
		if !o.returned {
			after = fmt.Sprintf("not in %v", stuckWait)
		}
		if !o.otherRan {
			other = "not run"
			if o.otherEver {
				other = "late"
			}
		}
		errText := "-"
		if o.err != nil {
			errText = o.err.Error()
		}
		fmt.Fprintf(&table, "%-11s %-9t %-8s %-10s %s\n", lib.Name, o.returned, after, other, errText)
	}
	t.Log(table.String())
}

func expect(o stuckOutcome, returned bool, after time.Duration, target error, otherRan bool) error {
	switch {
	case o.returned != returned:
		return fmt.Errorf("returned = %t, want %t", o.returned, returned)
	case o.after != after:
		return fmt.Errorf("returned after %v, want %v", o.after, after)
	case !errors.Is(o.err, target):
		return fmt.Errorf("error %v, want %v", o.err, target)
	case o.otherRan != otherRan:
		return fmt.Errorf("other hook ran = %t, want %t", o.otherRan, otherRan)
	}
	return nil
}

// runStuck runs inside a bubble. The stuck hook runs first: it is added last
// for the libraries that run last-added first, and first for oklog/run,
// which interrupts in registration order.
func runStuck(lib Lib) stuckOutcome {
	release := make(chan struct{})
	otherDone := make(chan struct{})
	stuck := func(context.Context) error { <-release; return nil }
	other := func(context.Context) error { close(otherDone); return nil }
	w := Workload{Hooks: []Hook{other, stuck}, HookTimeout: stuckHookBound, Budget: stuckBudget}
	if lib.Name == "oklog" {
		w.Hooks = []Hook{stuck, other}
	}
	trigger, wait := lib.Start(w)
	done := make(chan error, 1)
	start := time.Now()
	trigger()
	go func() { done <- wait() }()

	var o stuckOutcome
	select {
	case o.err = <-done:
		o.returned, o.after = true, time.Since(start)
	case <-time.After(stuckWait):
	}
	o.otherRan = closed(otherDone)
	close(release)
	if !o.returned {
		<-done // oklog/run returns once the hook is released
	}
	synctest.Wait() // abandoned goroutines finish
	o.otherEver = closed(otherDone)
	return o
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
