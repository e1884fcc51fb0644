//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// hangGuard bounds every wait in these tests. It is a guard against hangs,
// not a timing check: a healthy run ends in seconds.
const hangGuard = 60 * time.Second

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// worker returns the program, built once for the package's tests.
func worker(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "queue"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "queue")
		if out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// natsServer starts nats-server with JetStream on a random loopback port,
// storing in a directory of the test's own, and returns its URL.
func natsServer(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr != nil {
			if os.Getenv("CI") == "" {
				t.Skip("nats-server not found (install Debian's nats-server package; under CI=true this fails)")
			}
			t.Fatal(err)
		}
		bin = "/usr/sbin/nats-server"
	}
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	// The server logs its port, then "Server is ready".
	urlc := make(chan string, 1)
	go func() {
		url := ""
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if _, addr, ok := strings.Cut(line, "Listening for client connections on "); ok {
				url = "nats://" + strings.TrimSpace(addr)
			}
			if strings.Contains(line, "Server is ready") {
				urlc <- url
				break
			}
		}
		io.Copy(io.Discard, stderr)
		close(urlc)
	}()
	select {
	case url, ok := <-urlc:
		if !ok || url == "" {
			t.Fatalf("nats-server did not become ready")
		}
		return url
	case <-time.After(hangGuard):
		t.Fatalf("nats-server not ready after %v", hangGuard)
	}
	return ""
}

// workerRun is one worker process: what it printed and how it ended.
type workerRun struct {
	processed   []string // ids, in the order printed
	redelivered int      // messages it got with a delivery count above 1
	exit        error
	stderr      string
}

// startWorker runs the program and calls onLine with the number of
// messages processed so far after each one. It returns when the process
// has exited.
func startWorker(t *testing.T, ctx context.Context, url, out, job string, onStart func(*os.Process), onLine func(*os.Process, int)) *workerRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, worker(t), "-nats", url, "-out", out, "-ack-wait", "5s", "-work", job)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerRun{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			if onStart != nil {
				onStart(cmd.Process)
			}
			continue
		}
		var id string
		var delivery int
		if _, err := fmt.Sscanf(line, "processed %s delivery %d", &id, &delivery); err != nil {
			t.Errorf("worker stdout line %q, want \"processed ID delivery N\"", line)
			continue
		}
		w.processed = append(w.processed, id)
		if delivery > 1 {
			w.redelivered++
		}
		if onLine != nil {
			onLine(cmd.Process, len(w.processed))
		}
	}
	w.exit = cmd.Wait()
	w.stderr = stderr.String()
	if ctx.Err() != nil {
		t.Fatalf("worker still running after %v; stderr:\n%s", hangGuard, w.stderr)
	}
	return w
}

// queueRun is the whole scenario: the first worker stopped by sig halfway,
// the second finishing the stream.
type queueRun struct {
	messages      int
	first, second *workerRun
	counts        map[string]int // id -> lines in the ids file
}

func (q *queueRun) lines() int {
	n := 0
	for _, c := range q.counts {
		n += c
	}
	return n
}

func (q *queueRun) tally() (duplicated, lost int) {
	for i := 1; i <= q.messages; i++ {
		switch n := q.counts[strconv.Itoa(i)]; {
		case n == 0:
			lost++
		case n > 1:
			duplicated += n - 1
		}
	}
	return duplicated, lost
}

// runQueue publishes the ids 1..messages to the stream, starts a worker
// whose jobs take job each, sends it sig once it has processed at, then
// starts a second worker and stops it with SIGTERM once the consumer has
// nothing pending or unacked.
func runQueue(t *testing.T, sig syscall.Signal, messages, at int, job time.Duration) *queueRun {
	url := natsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs"}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= messages; i++ {
		if _, err := js.PublishAsync("jobs", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatalf("publishing %d messages: not acked within %v", messages, hangGuard)
	}

	out := filepath.Join(t.TempDir(), "processed ids.txt")
	q := &queueRun{messages: messages}
	q.first = startWorker(t, ctx, url, out, job.String(), nil, func(p *os.Process, n int) {
		if n == at {
			if err := p.Signal(sig); err != nil {
				t.Error(err)
			}
		}
	})
	// The second worker runs until the consumer has nothing left: no
	// message pending, none delivered and unacked (after SIGKILL, those
	// come back once their ack wait has passed).
	q.second = startWorker(t, ctx, url, out, "0s", func(p *os.Process) {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(50 * time.Millisecond): // polling, with ctx as the deadline
				}
				c, err := js.Consumer(ctx, "JOBS", "worker")
				if err != nil {
					continue
				}
				info, err := c.Info(ctx)
				if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
					p.Signal(syscall.SIGTERM)
					return
				}
			}
		}()
	}, nil)
	if q.second.exit != nil {
		t.Errorf("second worker: exit after SIGTERM: %v, want code 0; stderr:\n%s", q.second.exit, q.second.stderr)
	}

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	q.counts = map[string]int{}
	for line := range strings.Lines(string(b)) {
		q.counts[strings.TrimSuffix(line, "\n")]++
	}
	if len(q.first.processed) < at || len(q.first.processed) == messages {
		t.Errorf("first worker processed %d of %d messages, want at least %d and not all: the signal landed mid-stream",
			len(q.first.processed), messages, at)
	}
	return q
}

// TestSIGTERMProcessesEveryMessageOnce: the first worker stops on SIGTERM
// halfway, acking what it holds; the second processes the rest. Every id
// is in the ids file exactly once and nothing was redelivered.
func TestSIGTERMProcessesEveryMessageOnce(t *testing.T) {
	t.Parallel() // each test has a server of its own; the other mostly waits
	q := runQueue(t, syscall.SIGTERM, 10000, 5000, 0)
	q.exactlyOnce(t)
	dup, lost := q.tally()
	t.Logf("SIGTERM at 5000 processed: first worker %d, second %d, %d redelivered; ids file: %d lines, %d duplicated, %d lost",
		len(q.first.processed), len(q.second.processed), q.first.redelivered+q.second.redelivered, q.lines(), dup, lost)
}

// exactlyOnce checks that the first worker exited 0 and that every id is
// in the ids file once, none redelivered.
func (q *queueRun) exactlyOnce(t *testing.T) {
	t.Helper()
	if q.first.exit != nil {
		t.Errorf("first worker: exit after SIGTERM: %v, want code 0; stderr:\n%s", q.first.exit, q.first.stderr)
	}
	dup, lost := q.tally()
	if dup != 0 || lost != 0 || len(q.counts) != q.messages {
		t.Errorf("ids file: %d distinct ids, %d duplicated, %d lost; want %d, 0, 0", len(q.counts), dup, lost, q.messages)
	}
	if got := q.first.redelivered + q.second.redelivered; got != 0 {
		t.Errorf("%d messages redelivered, want 0: the first worker left messages unacked", got)
	}
}

// TestSIGTERMFinishesSlowJobsBeforeTheDrain: jobs of 100 ms, SIGTERM after
// the first. The worker finishes the ones it holds, for up to a second,
// and only then is the connection drained (AfterRun): their acks still
// reach the server.
func TestSIGTERMFinishesSlowJobsBeforeTheDrain(t *testing.T) {
	t.Parallel()
	q := runQueue(t, syscall.SIGTERM, 30, 1, 100*time.Millisecond)
	q.exactlyOnce(t)
	if len(q.first.processed) < 2 {
		t.Errorf("first worker processed %d jobs, want more than the 1 before the signal: it held some", len(q.first.processed))
	}
	t.Logf("SIGTERM after 1 of 30 jobs of 100ms: first worker finished %d, second %d; first worker's log:\n%s",
		len(q.first.processed), len(q.second.processed), q.first.stderr)
}

// TestSIGKILLRedeliversWhatWasHeld is the control: the first worker is
// killed halfway. Nothing is lost (the server redelivers what was not
// acked), but the second worker gets those messages again after the ack
// wait, and one processed and not yet acked is processed twice.
func TestSIGKILLRedeliversWhatWasHeld(t *testing.T) {
	t.Parallel()
	q := runQueue(t, syscall.SIGKILL, 10000, 5000, 0)
	var ee *exec.ExitError
	if !errors.As(q.first.exit, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("first worker: exit = %v, want killed by SIGKILL", q.first.exit)
	}
	dup, lost := q.tally()
	if lost != 0 {
		t.Errorf("ids file: %d ids lost, want 0: JetStream redelivers what was not acked", lost)
	}
	if q.second.redelivered == 0 {
		t.Errorf("second worker got no redelivered message after SIGKILL; want > 0: the killed worker held pulled, unacked messages")
	}
	t.Logf("SIGKILL at 5000 processed: first worker %d, second %d (%d of them redelivered); ids file: %d lines, %d duplicated, %d lost",
		len(q.first.processed), len(q.second.processed), q.second.redelivered,
		q.lines(), dup, lost)
}
