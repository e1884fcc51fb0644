package e2e

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

// startStreams runs examples/streams (WebSocket on addr, gRPC on grpcAddr)
// with the e2e drain delay and budget.
func startStreams(t *testing.T, name string, drain time.Duration) (in *instance, grpcAddr string) {
	t.Helper()
	in = startProgram(t, name, streamsBin, "-addr", "127.0.0.1:0", "-grpc-addr", "127.0.0.1:0",
		"-drain-delay", drain.String(), "-timeout", budget.String())
	m := regexp.MustCompile(`msg=listening addr=\S+ grpc=(\S+)`).FindStringSubmatch(in.logs())
	if m == nil {
		t.Fatalf("%s logged no gRPC address:\n%s", name, in.logs())
	}
	return in, m[1]
}

// totals returns the named counters of the last record msg in the
// instance's log: `msg="websocket totals" connections=50 acked=...`.
func (in *instance) totals(msg string, names ...string) map[string]int {
	in.t.Helper()
	out := map[string]int{}
	for _, name := range names {
		re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".* ` + name + `=(\d+)`)
		all := re.FindAllStringSubmatch(in.logs(), -1)
		if all == nil {
			in.t.Errorf("%s logged no %q with %s:\n%s", in.name, msg, name, in.logs())
			continue
		}
		out[name], _ = strconv.Atoi(all[len(all)-1][1])
	}
	return out
}

// durations summarises how long the clients took, close to reconnect.
type durations []time.Duration

func (d durations) String() string {
	if len(d) == 0 {
		return "none"
	}
	lo, hi, sum := d[0], d[0], time.Duration(0)
	for _, v := range d {
		lo, hi, sum = min(lo, v), max(hi, v), sum+v
	}
	r := func(v time.Duration) time.Duration { return v.Round(100 * time.Microsecond) }
	return "min " + r(lo).String() + ", mean " + r(sum/time.Duration(len(d))).String() + ", max " + r(hi).String()
}
