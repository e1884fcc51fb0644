package shutdown

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	Hooks   []HookReport  // one per hook and component, by start

	// LateArrivals counts the requests that arrived after a drain of
	// WithAdaptiveDrain ended and before the hooks ended: a sign that its
	// least (after a quiet end) or most is too short for the load
	// balancer. Always 0 without it.
	LateArrivals int
}

// A HookReport is one hook's line in a [Report].
type HookReport struct {
	Name      string        // the name given to Add or Go; "run" for Run's function
	Set       string        // its Concurrent set, or ""
	Component bool          // a component (Go or Run), not a hook
	Start     time.Duration // when it started (or was skipped), from the shutdown's start; a component's may be negative
	Elapsed   time.Duration // how long it ran; for an abandoned hook or component, until it was abandoned
	Outcome   string        // "ok", "failed", "timeout", "panic" or "skipped", as logged
	Err       *HookError    // nil when Outcome is "ok"
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

// newReport assembles the report once nothing records any more.
func newReport(cause string, budget, drain, elapsed time.Duration, rows []HookReport) *Report {
	// Hook rows were appended as hooks ended, which is start order but for
	// the members of sets, and component rows after them.
	slices.SortStableFunc(rows, func(a, b HookReport) int { return cmp.Compare(a.Start, b.Start) })
	return &Report{Cause: cause, Budget: budget, Drain: drain, Elapsed: elapsed, Hooks: rows}
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
// Components are drawn with '#' from where shutdown started (or they did) to
// where they returned, and their names are in brackets.
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
		start, elapsed := h.Start, h.Elapsed
		if h.Component {
			mark = '#'
			if start < 0 {
				start, elapsed = 0, max(elapsed+start, 0)
			}
		}
		switch h.Outcome {
		case "ok":
		case "skipped":
			mark = '-'
		default:
			mark = 'x'
		}
		bar(h.label(), start, elapsed, mark, h.Outcome)
	}
	return b.String()
}

func (h HookReport) label() string {
	if h.Component {
		return "[" + h.Name + "]"
	}
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

// Stacks of abandoned hooks and components. Each task records its
// goroutine's id when it starts; an abandonment takes one runtime.Stack of
// every goroutine and cuts out the task's own goroutine and, for a hook,
// the goroutines it started (found through "created by ... in goroutine N").
// Rejected: pprof labels. The goroutine profile groups goroutines by label
// cheaply, but a label is inherited by every goroutine started under it, so
// a label on Run's function or a component leaks into the service's own
// goroutines, their stacks and its CPU profiles, and a reused label names
// goroutines that earlier hooks left behind. Goroutine ids are never reused.

// goid returns the calling goroutine's id, from the first line of its
// stack: "goroutine 18 [running]:".
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b, _ = bytes.CutPrefix(b, []byte("goroutine "))
	n, _ := strconv.ParseUint(string(b[:max(bytes.IndexByte(b, ' '), 0)]), 10, 64)
	return n
}

// pkgPrefix is this package's path and a dot, as function names in stacks
// start: "github.com/gracefulgo/shutdown.". It is found at run time, so a
// fork or a vendored copy under another module path is read as well.
var pkgPrefix = strings.TrimSuffix(runtime.FuncForPC(reflect.ValueOf((*task).run).Pointer()).Name(), "(*task).run")

// goroutine is one block of a runtime.Stack dump.
type goroutine struct {
	id, parent uint64
	frames     string // "function\n\tfile:line\n" each, the user's only
	logger     bool   // the log goroutine, which a hook may have started by logging
}

// stacks returns the stacks of ts's goroutines, as "function\n\tfile:line\n"
// frames, user code first, with a hook's descendants after its own
// goroutine, separated by blank lines. It stops the world while the runtime
// formats every goroutine.
func stacks(own map[uint64]bool, ts ...*task) map[*task][]byte {
	// Each try stops the world and formats every goroutine: size the
	// buffer for the usual few KiB a goroutine, so that one try is enough
	// but for unusually deep stacks.
	buf := make([]byte, max(64<<10, min(runtime.NumGoroutine()*4<<10, 64<<20)))
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := parseStacks(string(buf), pkgPrefix)
	out := make(map[*task][]byte, len(ts))
	for _, t := range ts {
		if t.gid.Load() == 0 {
			continue // abandoned before its goroutine ran: no frame of its own yet
		}
		ids := map[uint64]bool{t.gid.Load(): true}
		// A hook's descendants, but not this Manager's own goroutines (a
		// set member that the hook added) nor the log goroutine that one of
		// its records started.
		for grew := t.kind == isHook; grew; {
			grew = false
			for _, g := range all {
				if !ids[g.id] && ids[g.parent] && !own[g.id] && !g.logger {
					ids[g.id], grew = true, true
				}
			}
		}
		var b []byte
		for _, own := range []bool{true, false} { // its own goroutine first
			for _, g := range all {
				if ids[g.id] && (g.id == t.gid.Load()) == own && g.frames != "" {
					if len(b) > 0 {
						b = append(b, '\n')
					}
					b = append(b, g.frames...)
				}
			}
		}
		out[t] = b
	}
	return out
}

// parseStacks reads runtime.Stack's text. A frame is a function line,
// "pkg.f(args)", then a tab and "file:line +0xpc"; file paths may contain
// spaces, so nothing is split on them. Frames are cut where the library
// calls the user's function (pkg is the library's prefix), so a stack
// shows the user's code only.
func parseStacks(s, pkg string) []goroutine {
	own := []string{pkg + "(*task).run", pkg + "(*runner).runHook.func", pkg + "(*Manager).startComponent.func"}
	logq := pkg + "(*logQueue).drain"
	var gs []goroutine
	for block := range strings.SplitSeq(s, "\n\n") {
		lines := strings.Split(block, "\n")
		head, ok := strings.CutPrefix(lines[0], "goroutine ")
		if !ok {
			continue
		}
		id, _ := strconv.ParseUint(head[:max(strings.IndexByte(head, ' '), 0)], 10, 64)
		g := goroutine{id: id}
		var b strings.Builder
		cut := false
		for i := 1; i < len(lines); i++ {
			line := lines[i]
			if line == "" || line[0] == '\t' {
				continue
			}
			if rest, ok := strings.CutPrefix(line, "created by "); ok {
				if _, p, ok := strings.Cut(rest, " in goroutine "); ok {
					g.parent, _ = strconv.ParseUint(p, 10, 64)
				}
				continue
			}
			fn := line
			if j := strings.LastIndexByte(fn, '('); j > 0 && strings.HasSuffix(fn, ")") {
				fn = fn[:j]
			}
			for _, o := range own {
				cut = cut || strings.HasPrefix(fn, o)
			}
			g.logger = g.logger || strings.HasPrefix(fn, logq)
			if cut || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "\t") {
				continue
			}
			file := strings.TrimPrefix(lines[i+1], "\t")
			if j := strings.LastIndex(file, " +0x"); j > 0 {
				file = file[:j]
			}
			b.WriteString(fn + "\n\t" + file + "\n")
		}
		g.frames = b.String()
		gs = append(gs, g)
	}
	return gs
}

// logQueue hands log records, in order, to the handler on one goroutine at
// a time, started when a record arrives and ended when none is left, so no
// goroutine outlives the records and none of the Manager's own waits on a
// handler.
type logQueue struct {
	mu      sync.Mutex
	recs    []logRecord
	running bool
	dropped atomic.Int64 // records lost to a panicking handler, not yet reported
}

type logRecord struct {
	h    slog.Handler
	r    slog.Record
	done chan struct{} // closed once handled, if not nil
}

// log queues a record for the configured logger, or slog.Default() at the
// time of the call. It never blocks on the handler.
func (m *Manager) log(level slog.Level, msg string, attrs ...slog.Attr) {
	m.logThen(nil, level, msg, attrs...)
}

func (m *Manager) logThen(done chan struct{}, level slog.Level, msg string, attrs ...slog.Attr) {
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	q := &m.logs
	q.mu.Lock()
	q.recs = append(q.recs, logRecord{logger(m.cfg.logger).Handler(), r, done})
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go q.drain()
	}
}

func (q *logQueue) drain() {
	var done chan struct{} // the done of the record in hand, if any
	goexit := true
	defer func() {
		if goexit {
			// A handler called runtime.Goexit, which ends this goroutine
			// whatever recovers: handle counted its record as lost, and a
			// new goroutine takes the queue over, still marked running.
			if done != nil {
				close(done)
			}
			go q.drain()
		}
	}()
	for {
		q.mu.Lock()
		if len(q.recs) == 0 {
			q.running = false
			q.recs = nil
			q.mu.Unlock()
			goexit = false
			return
		}
		rec := q.recs[0]
		q.recs = q.recs[1:]
		q.mu.Unlock()
		done = rec.done
		q.handle(rec.h, rec.r)
		if done != nil {
			close(done)
		}
		done = nil
	}
}

// handle gives r to h, on a goroutine of the library's own: the log
// goroutine, or the forced exit's. A handler that panics or calls
// runtime.Goexit loses the record, not the process (DESIGN, "What bad
// input and faults get"): a panic is recovered, and the number of records
// lost so goes out with the next record that h handles, as
// "dropped_records".
func (q *logQueue) handle(h slog.Handler, r slog.Record) {
	var n int64 // the lost records this one carries
	returned := false
	defer func() {
		if !returned { // a panic, recovered here, or runtime.Goexit, which goes on
			recover()
			q.dropped.Add(n + 1)
		}
	}()
	ctx := context.Background()
	if h.Enabled(ctx, r.Level) {
		if n = q.dropped.Swap(0); n > 0 {
			r.AddAttrs(slog.Int64("dropped_records", n)) // r is a copy no one else reads
		}
		_ = h.Handle(ctx, r)
	}
	returned = true
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
