package shutdown

import (
	"fmt"
	"testing"
	"time"
)

func TestWithGracePeriod(t *testing.T) {
	const s = time.Second
	cases := []struct {
		opts       []Option
		k8s        bool
		budget     time.Duration
		drain      time.Duration
		optsString string
	}{
		{[]Option{WithGracePeriod(30*s, 0)}, false, 28 * s, 0, "shutdown.WithGracePeriod(30s, 0s)"},
		{[]Option{WithGracePeriod(30*s, 0)}, true, 28 * s, 5 * s, ""},
		{[]Option{WithGracePeriod(10*s, 0)}, true, 8 * s, 1600 * time.Millisecond, ""},
		// A preStop hook covered the propagation: no implicit drain.
		{[]Option{WithGracePeriod(45*s, 10*s)}, true, 33 * s, 0, "shutdown.WithGracePeriod(45s, 10s)"},
		{[]Option{WithGracePeriod(45*s, 10*s), WithDrainDelay(3 * s)}, true, 33 * s, 3 * s, ""},
		// The last of WithTimeout and WithGracePeriod wins.
		{[]Option{WithGracePeriod(45*s, 10*s), WithTimeout(20 * s)}, true, 20 * s, 4 * s, ""},
		{[]Option{WithTimeout(20 * s), WithGracePeriod(4*s, 0)}, false, 2 * s, 0, ""},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.opts, tc.k8s), func(t *testing.T) {
			if tc.k8s {
				t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
			}
			m := newTest(tc.opts...)
			if m.cfg.timeout != tc.budget || m.cfg.drain != tc.drain {
				t.Errorf("New(%v): budget %v, drain %v; want %v, %v", tc.opts, m.cfg.timeout, m.cfg.drain, tc.budget, tc.drain)
			}
			if tc.optsString != "" {
				if got := tc.opts[0].String(); got != tc.optsString {
					t.Errorf("String() = %q, want %q", got, tc.optsString)
				}
			}
		})
	}
}

func TestWithGracePeriodPanics(t *testing.T) {
	const s = time.Second
	cases := []struct {
		name, want string
		f          func()
	}{
		{"zero grace", "shutdown: WithGracePeriod: grace must be positive, got 0s", func() { WithGracePeriod(0, 0) }},
		{"negative preStop", "shutdown: WithGracePeriod: preStop must not be negative, got -1s", func() { WithGracePeriod(30*s, -s) }},
		{"no budget", "shutdown: WithGracePeriod: grace 12s leaves no budget after preStop 10s and the 2s margin", func() { WithGracePeriod(12*s, 10*s) }},
		{"drain does not fit", "shutdown: WithDrainDelay(5s) does not fit shutdown.WithGracePeriod(8s, 1s): its budget is 5s", func() {
			New(WithSignals(), WithGracePeriod(8*s, s), WithDrainDelay(5*s))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantPanic(t, tc.want, tc.f) })
	}
}
