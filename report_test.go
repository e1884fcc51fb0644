package shutdown

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		m := newTest(WithTimeout(10*time.Second), WithDrainDelay(time.Second))
		if m.Report() != nil {
			t.Error("Report() before shutdown is not nil")
		}
		m.Add("skipped", func(context.Context) error { return nil })
		m.Add("stuck", func(context.Context) error { <-release; return nil })
		m.Add("panics", func(context.Context) error { panic("boom") })
		m.Add("fails", func(context.Context) error { return errors.New("disk full") })
		m.Add("a", func(context.Context) error { time.Sleep(2 * time.Second); return nil }, Concurrent("servers"))
		m.Add("b", func(context.Context) error { time.Sleep(3 * time.Second); return nil }, Concurrent("servers"))
		m.Add("ok", func(context.Context) error { time.Sleep(500 * time.Millisecond); return nil })
		m.Trigger()
		m.Wait()
		r := m.Report()
		if r == nil || r != m.Report() {
			t.Fatal("Report() after Wait is nil or differs between calls")
		}
		if r.Cause != "shutdown: triggered" || r.Budget != 10*time.Second || r.Drain != time.Second || r.Elapsed != 10*time.Second {
			t.Errorf("Report = %+v, want cause, 10s budget, 1s drain, 10s elapsed", r)
		}
		type row struct {
			name, set     string
			start, length time.Duration
			outcome       string
		}
		want := []row{
			{"ok", "", 1 * time.Second, 500 * time.Millisecond, "ok"},
			{"a", "servers", 1500 * time.Millisecond, 2 * time.Second, "ok"},
			{"b", "servers", 1500 * time.Millisecond, 3 * time.Second, "ok"},
			{"fails", "", 4500 * time.Millisecond, 0, "failed"},
			{"panics", "", 4500 * time.Millisecond, 0, "panic"},
			{"stuck", "", 4500 * time.Millisecond, 5500 * time.Millisecond, "timeout"},
			{"skipped", "", 10 * time.Second, 0, "skipped"},
		}
		if len(r.Hooks) != len(want) {
			t.Fatalf("Report has %d hooks, want %d:\n%v", len(r.Hooks), len(want), r)
		}
		for i, w := range want {
			h := r.Hooks[i]
			got := row{h.Name, h.Set, h.Start, h.Elapsed, h.Outcome}
			if h.Name == "a" || h.Name == "b" { // the set's members end in any order
				got, w = row{h.Name, h.Set, h.Start, 0, h.Outcome}, row{h.Name, "servers", w.start, 0, "ok"}
			}
			if got != w {
				t.Errorf("Hooks[%d] = %+v, want %+v", i, got, w)
			}
			if (h.Outcome == "ok") != (h.Err == nil) {
				t.Errorf("Hooks[%d] outcome %s with Err %v", i, h.Outcome, h.Err)
			}
		}
		s := r.String()
		for _, want := range []string{
			"shutdown: triggered: 10s of the 10s budget\n",
			"drain     |====                                    |      0s +1s\n",
			"servers/b |      ============                      |    1.5s +3s      ok\n",
			"stuck     |                  xxxxxxxxxxxxxxxxxxxxxx|    4.5s +5.5s    timeout\n",
			"skipped   |                                       -|     10s +0s      skipped\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("timeline lacks %q:\n%s", want, s)
			}
		}
	})
}
