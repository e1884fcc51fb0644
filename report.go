package shutdown

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A Report says where the seconds of one shutdown went: the drain delay and
// each hook's start, duration and outcome. Read it with [Manager.Report]
// after [Manager.Wait], for tests, metrics and post-mortems; its String
// method draws a timeline.
type Report struct {
	Cause   string        // what started shutdown, as logged: "shutdown: received SIGTERM"
	Budget  time.Duration // the total budget
	Drain   time.Duration // how long the drain delay ran (0 when skipped)
	Elapsed time.Duration // from the start to the result
	Hooks   []HookReport  // one per hook that ran, was abandoned or was skipped, by start
}

// A HookReport is one hook's line in a [Report].
type HookReport struct {
	Name    string        // the name given to Add
	Set     string        // its Concurrent set, or ""
	Start   time.Duration // when it started (or was skipped), from the shutdown's start
	Elapsed time.Duration // how long it ran; for an abandoned hook, until it was abandoned
	Outcome string        // "ok", "failed", "timeout", "panic" or "skipped", as logged
	Err     *HookError    // nil when Outcome is "ok"
}

// Report returns the report of a finished shutdown, the same value to every
// caller, or nil while shutdown has not finished.
func (m *Manager) Report() *Report {
	select {
	case <-m.done:
		return m.report
	default:
		return nil
	}
}

// buildReport assembles the report once no hook records any more.
func (m *Manager) buildReport(cause string, elapsed, drain time.Duration) *Report {
	// Rows were appended as hooks ended, which is start order but for the
	// members of sets; the sort is nearly free on sorted input. The report
	// owns m.rows from here on: nothing appends once shutdown has finished.
	rows := m.rows
	slices.SortStableFunc(rows, func(a, b HookReport) int { return cmp.Compare(a.Start, b.Start) })
	return &Report{Cause: cause, Budget: m.cfg.timeout, Drain: drain, Elapsed: elapsed, Hooks: rows}
}

// timelineWidth is the width of the time axis of Report.String, in
// characters.
const timelineWidth = 40

// String draws the report as a text timeline, one bar per hook on the
// shutdown's time axis, so hooks of a Concurrent set stand side by side:
//
//	shutdown: received SIGTERM: 929ms of the 5s budget
//	drain      |=====================                   |      0s +501ms
//	http       |                     ============       |   501ms +278ms   ok
//	access-log |                                 =      |   778ms +141µs   ok
//	database   |                                 ====== |   778ms +151ms   ok
//
// A failed hook's bar is drawn with 'x', a skipped one with a single '-'.
func (r *Report) String() string {
	if r == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v of the %v budget\n", r.Cause, round(r.Elapsed), r.Budget)
	width := len("drain")
	for _, h := range r.Hooks {
		width = max(width, len(h.label()))
	}
	width = min(width, 24)
	total := max(r.Elapsed, time.Nanosecond)
	bar := func(name string, start, elapsed time.Duration, mark byte, outcome string) {
		from := int(int64(start) * timelineWidth / int64(total))
		to := int(int64(start+elapsed) * timelineWidth / int64(total))
		from = min(max(from, 0), timelineWidth-1)
		to = min(max(to, from+1), timelineWidth)
		line := bytes.Repeat([]byte{' '}, timelineWidth)
		for i := from; i < to; i++ {
			line[i] = mark
		}
		if len(name) > width {
			name = name[:width-1] + "~"
		}
		row := fmt.Sprintf("%-*s |%s| %7v +%-7v %s", width, name, line, round(start), round(elapsed), outcome)
		b.WriteString(strings.TrimRight(row, " "))
		b.WriteByte('\n')
	}
	if r.Drain > 0 {
		bar("drain", 0, r.Drain, '=', "")
	}
	for _, h := range r.Hooks {
		mark := byte('=')
		switch h.Outcome {
		case "ok":
		case "skipped":
			mark = '-'
		default:
			mark = 'x'
		}
		bar(h.label(), h.Start, h.Elapsed, mark, h.Outcome)
	}
	return b.String()
}

func (h HookReport) label() string {
	if h.Set != "" {
		return h.Set + "/" + h.Name
	}
	return h.Name
}

// round shortens a duration for the timeline: microseconds below a
// millisecond, milliseconds above.
func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// Stacks of stuck hooks. Every goroutine that runs hooks carries a pprof
// label; when a hook is abandoned, its goroutine is picked out of the
// goroutine profile by that label. runtime.Stack(all) would give the same
// stacks, but no way to tell which goroutine runs the hook short of parsing
// goroutine ids at every hook's start, which costs more than the hook.
// Goroutines the hook started inherit the label and are shown too.
//
// Rejected: recording each hook goroutine's id (once per worker) and
// cutting its stack out of runtime.Stack(buf, true). It would drop
// runtime/pprof from the binary (about 320 KiB, BENCHMARKS.md), but
// runtime.Stack(all) keeps the world stopped while it formats every
// goroutine: measured 7 ms with 1,000 goroutines and 180 ms with 10,000,
// against 2 ms and 22 ms for the goroutine profile, which stops the world
// only briefly (BenchmarkStackCapture, both versions, same machine).

const labelKey = "shutdown.hook"

var labelSeq atomic.Uint64

func newLabel() string { return "g" + strconv.FormatUint(labelSeq.Add(1), 10) }

// setLabel labels the calling goroutine.
func setLabel(label string) {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels(labelKey, label)))
}

// stacks returns, for each of labels, the stacks of the goroutines that
// carry it, as "function\n\tfile:line\n" frames, user code first: frames
// of this package below the hook are cut. It takes one goroutine profile,
// which stops the world for a moment.
func stacks(labels ...string) map[string][]byte {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 1)
	want := make(map[string]string, len(labels))
	for _, l := range labels {
		want[`"`+labelKey+`":"`+l+`"`] = l
	}
	out := make(map[string][]byte)
	for block := range strings.SplitSeq(buf.String(), "\n\n") {
		label := ""
		var frames []string
		for line := range strings.SplitSeq(block, "\n") {
			if rest, ok := strings.CutPrefix(line, "# labels: "); ok {
				for key, l := range want {
					if strings.Contains(rest, key) {
						label = l
					}
				}
				continue
			}
			f := strings.Fields(strings.TrimPrefix(line, "#"))
			if !strings.HasPrefix(line, "#") || len(f) != 3 {
				continue
			}
			fn := f[1]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			if fn == "github.com/gracefulgo/shutdown.call" {
				break // the library's own frames below the hook
			}
			frames = append(frames, fn+"\n\t"+f[2]+"\n")
		}
		if label != "" && len(frames) > 0 {
			if len(out[label]) > 0 {
				out[label] = append(out[label], "\n"...)
			}
			out[label] = append(out[label], strings.Join(frames, "")...)
		}
	}
	return out
}
