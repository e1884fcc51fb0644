package shutdown

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkShutdown measures a whole shutdown with n no-op hooks, from New
// to Wait, with logging off (a handler above Info); ns/hook is the figure
// the target (under 1µs, at most 3 allocations a hook) is about.
func BenchmarkShutdown(b *testing.B) {
	nop := func(context.Context) error { return nil }
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("hooks=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m := New(WithSignals(), WithLogger(discard))
				for range n {
					m.Add("nop", nop)
				}
				m.Trigger()
				if err := m.Wait(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/hook")
		})
	}
}

// BenchmarkTriggerToFirstHook measures the time from Trigger to the first
// hook starting.
func BenchmarkTriggerToFirstHook(b *testing.B) {
	b.ReportAllocs()
	started := make(chan struct{}, 1)
	for b.Loop() {
		b.StopTimer()
		m := New(WithSignals(), WithLogger(discard))
		m.Add("first", func(context.Context) error { started <- struct{}{}; return nil })
		b.StartTimer()
		m.Trigger()
		<-started
		b.StopTimer()
		m.Wait()
		b.StartTimer()
	}
}

// BenchmarkStackCapture measures one capture of an abandoned hook's stack,
// the cost an abandonment adds beyond the hook's bound, with g other
// goroutines alive in the process.
func BenchmarkStackCapture(b *testing.B) {
	for _, g := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			release := make(chan struct{})
			defer close(release)
			for range g {
				go func() { <-release }()
			}
			t := &task{kind: isHook}
			entered := make(chan struct{})
			go t.run(func() error { close(entered); <-release; return nil }, func(result) {})
			<-entered
			for b.Loop() {
				if len(stacks(nil, t)[t]) == 0 {
					b.Fatal("no stack for the task's goroutine")
				}
			}
		})
	}
}
