// Package k8s holds tests that roll Deployments on a real single-node
// Kubernetes cluster: a real kubelet sends the SIGTERMs through containerd
// and runc, and a real kube-proxy moves the traffic. run.sh starts the node
// inside namespaces of its own and runs this package's test binary there;
// the tests reach the cluster with kubectl (KUBECONFIG and K8S_BIN set by
// run.sh) and send their load only to its Service addresses.
package k8s

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBECONFIG") == "" || os.Getenv("K8S_BIN") == "" {
		fmt.Fprintln(os.Stderr, "these tests need the node that e2e/k8s/run.sh starts: run that script")
		os.Exit(2)
	}
	code := m.Run()
	printTable()
	os.Exit(code)
}

// kubectl runs kubectl with args and returns its standard output.
func kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(os.Getenv("K8S_BIN"), "kubectl"), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// mustKubectl is kubectl for set-up steps, which fail the test at once.
func mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls f every 200 ms until it returns nil or secs pass: for
// set-up steps only (a Service that kube-proxy has not programmed yet),
// never for an assertion.
func eventually(t *testing.T, what string, secs int, f func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("set-up: %s: still failing after %ds: %v", what, secs, err)
		}
		time.Sleep(200 * time.Millisecond) // a poll interval, not synchronisation
	}
}

// podEnd is what the tests learn about one old pod's end.
type podEnd struct {
	Name       string
	Terminated bool // a terminated container state was seen
	ExitCode   int
	Reason     string
	Finished   time.Time // 1 s resolution, from the API
	Deleted    bool      // the pod object is gone
	Log        []logLine // the container's log, with the runtime's timestamps
}

type logLine struct {
	At   time.Time
	Text string
}

// watcher follows the pods matched by a label selector (kubectl get -w) and
// the logs of the pods named, from before they are told to stop until they
// are gone.
type watcher struct {
	mu      sync.Mutex
	pods    map[string]*podEnd
	unwatch context.CancelFunc // ends kubectl get --watch
	cancel  context.CancelFunc // ends the log followers too
	watched sync.WaitGroup     // the watch's reader
	logs    sync.WaitGroup     // the log followers
}

func watchPods(t *testing.T, selector string, names []string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	watchCtx, unwatch := context.WithCancel(ctx)
	w := &watcher{pods: map[string]*podEnd{}, unwatch: unwatch, cancel: cancel}
	for _, n := range names {
		w.pods[n] = &podEnd{Name: n}
	}
	cmd := exec.CommandContext(watchCtx, filepath.Join(os.Getenv("K8S_BIN"), "kubectl"),
		"get", "pods", "-l", selector, "--watch", "--output-watch-events", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.watched.Add(1)
	go func() {
		defer w.watched.Done()
		defer cmd.Wait()
		dec := json.NewDecoder(out)
		for {
			var ev watchEvent
			if dec.Decode(&ev) != nil {
				return
			}
			w.record(ev)
		}
	}()
	for _, n := range names {
		w.logs.Add(1)
		go func() {
			defer w.logs.Done()
			w.follow(ctx, n)
		}()
	}
	return w
}

type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Status struct {
			ContainerStatuses []struct {
				State struct {
					Terminated *struct {
						ExitCode   int       `json:"exitCode"`
						Reason     string    `json:"reason"`
						FinishedAt time.Time `json:"finishedAt"`
					} `json:"terminated"`
				} `json:"state"`
			} `json:"containerStatuses"`
		} `json:"status"`
	} `json:"object"`
}

func (w *watcher) record(ev watchEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pods[ev.Object.Metadata.Name]
	if p == nil {
		return
	}
	if ev.Type == "DELETED" {
		p.Deleted = true
	}
	for _, cs := range ev.Object.Status.ContainerStatuses {
		if term := cs.State.Terminated; term != nil {
			p.Terminated, p.ExitCode, p.Reason, p.Finished = true, term.ExitCode, term.Reason, term.FinishedAt
		}
	}
}

// follow streams the pod's log with timestamps until its container exits.
func (w *watcher) follow(ctx context.Context, name string) {
	cmd := exec.CommandContext(ctx, filepath.Join(os.Getenv("K8S_BIN"), "kubectl"), "logs", "-f", "--timestamps", name)
	out, err := cmd.StdoutPipe()
	if err != nil || cmd.Start() != nil {
		return
	}
	defer cmd.Wait()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		at, text, ok := strings.Cut(sc.Text(), " ")
		ts, err := time.Parse(time.RFC3339Nano, at)
		if !ok || err != nil {
			continue
		}
		w.mu.Lock()
		w.pods[name].Log = append(w.pods[name].Log, logLine{ts, text})
		w.mu.Unlock()
	}
}

// ended reports whether every watched pod has ended (a terminated state
// seen, or the pod deleted).
func (w *watcher) ended() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.pods {
		if !p.Terminated && !p.Deleted {
			return false
		}
	}
	return true
}

// wait waits up to secs for every watched pod to end (a hang guard), then
// stops watching and returns what was seen.
func (w *watcher) wait(t *testing.T, secs int) []podEnd {
	t.Helper()
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for !w.ended() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond) // a poll interval, not synchronisation
	}
	w.unwatch()
	w.watched.Wait()
	// The log followers end by themselves once their containers have
	// exited and their last lines are read; the timer is a hang guard.
	guard := time.AfterFunc(30*time.Second, w.cancel)
	w.logs.Wait()
	guard.Stop()
	w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	var ends []podEnd
	for _, p := range w.pods {
		ends = append(ends, *p)
	}
	return ends
}

// signalled is when the pod's program logged the signal: the first line
// containing marker.
func (p podEnd) signalled(marker string) (time.Time, bool) {
	for _, l := range p.Log {
		if strings.Contains(l.Text, marker) {
			return l.At, true
		}
	}
	return time.Time{}, false
}

// exited is when the program logged its last line "exiting", or, if it
// never did (killed), when the runtime saw it end.
func (p podEnd) exited() time.Time {
	for i := len(p.Log) - 1; i >= 0; i-- {
		if strings.Contains(p.Log[i].Text, "msg=exiting") {
			return p.Log[i].At
		}
	}
	return p.Finished
}

// logged reports whether a log line contains s.
func (p podEnd) logged(s string) bool {
	_, ok := p.line(s)
	return ok
}

// line returns the first log line that contains s.
func (p podEnd) line(s string) (string, bool) {
	for _, l := range p.Log {
		if strings.Contains(l.Text, s) {
			return l.Text, true
		}
	}
	return "", false
}

func (p podEnd) lastLines(n int) string {
	var b strings.Builder
	for _, l := range p.Log[max(0, len(p.Log)-n):] {
		fmt.Fprintf(&b, "    %s %s\n", l.At.Format("15:04:05.000"), l.Text)
	}
	return b.String()
}
