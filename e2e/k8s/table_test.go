package k8s

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// The run ends with one table of what every scenario measured, for
// docs/kubernetes.md.
var table struct {
	mu   sync.Mutex
	rows []string
}

func addRow(cells ...string) {
	table.mu.Lock()
	defer table.mu.Unlock()
	table.rows = append(table.rows, "| "+strings.Join(cells, " | ")+" |")
}

// addRows records one rollout: its load, failures, and the old pods' ends.
func addRows(scenario, server string, d deployment, r rolled) {
	var reqs, failed []string
	for _, k := range r.loads.kinds() {
		s, f, _ := k.t.counts()
		reqs, failed = append(reqs, fmt.Sprint(s)), append(failed, fmt.Sprint(f))
	}
	req, fail := strings.Join(reqs, " / "), strings.Join(failed, " / ")
	if len(r.streams) > 0 {
		var events, moves, cut int
		for _, s := range r.streams {
			e, m, g, errs := s.counts()
			events, moves, cut = events+e, moves+m, cut+g+len(errs)
		}
		req += fmt.Sprintf("; %d streams, %d events, %d moves", len(r.streams), events, moves)
		fail += fmt.Sprintf("; %d stream errors or gaps", cut)
	}
	codes, stops, kills := ends(r.ends, d.Marker)
	addRow(scenario, server, fmt.Sprint(d.Replicas), req, fail,
		codes, stops, fmt.Sprint(kills), fmt.Sprintf("%.1f s", r.took.Seconds()))
}

// addPodRow records one pod stopped on its own (the budget scenarios).
func addPodRow(scenario, server string, p podEnd, grace int) {
	codes, stops, kills := ends([]podEnd{p}, "shutdown: started")
	addRow(scenario, server, "1", "–", "–", codes, stops, fmt.Sprint(kills), fmt.Sprintf("grace %d s", grace))
}

// ends sums up old pods: their exit codes, SIGTERM → exit for each (from the
// line that shows the signal to the last line, or to the runtime's 1 s
// finish time for a pod that never logged its exit), and SIGKILLs (137).
func ends(ps []podEnd, marker string) (codes, stops string, kills int) {
	var cs, ss []string
	for _, p := range ps {
		if !p.Terminated {
			cs = append(cs, "?")
			continue
		}
		cs = append(cs, fmt.Sprint(p.ExitCode))
		if p.ExitCode == 137 {
			kills++
		}
		if sig, ok := p.signalled(marker); ok {
			prefix := ""
			if !p.logged("msg=exiting") {
				prefix = "≈"
			}
			ss = append(ss, fmt.Sprintf("%s%.2f s", prefix, p.exited().Sub(sig).Seconds()))
		}
	}
	slices.Sort(ss)
	return strings.Join(cs, ", "), strings.Join(ss, ", "), kills
}

func printTable() {
	table.mu.Lock()
	defer table.mu.Unlock()
	if len(table.rows) == 0 {
		return
	}
	fmt.Fprintln(os.Stdout, "\n| scenario | server | replicas | requests (keep-alive / per connection / slow) | failed | old pods' exit codes | SIGTERM → exit | SIGKILLs | rollout |")
	fmt.Fprintln(os.Stdout, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range table.rows {
		fmt.Fprintln(os.Stdout, r)
	}
}
