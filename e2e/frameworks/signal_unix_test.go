//go:build unix

package frameworks

import (
	"bufio"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var listening = regexp.MustCompile(`listening addr=(\S+)`)

// TestGinServiceExitsZeroOnSIGTERM builds ginservice, a gin program wired
// as the recipe says, and sends it a real SIGTERM while a slow request is
// in flight, two streams are open and clients keep sending requests. It
// exits 0 within the drain delay plus a second, every request got its
// whole response and both streams ended by m.Context(), cleanly.
func TestGinServiceExitsZeroOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ginservice")
	build := exec.Command("go", "build", "-o", bin, "./ginservice")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./ginservice: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-drain-delay", drain.String())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		log     strings.Builder
		addr    = make(chan string, 1)
		slowIn  = make(chan struct{}, 1)
		exited  = make(chan struct{})
		waitErr error
	)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			log.WriteString(line + "\n")
			mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
			if strings.Contains(line, "slow request started") {
				slowIn <- struct{}{}
			}
		}
		waitErr = cmd.Wait() // after the pipe is drained, as Wait requires
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	var a string
	select {
	case a = <-addr:
	case <-exited:
		t.Fatalf("ginservice exited before listening: %v\n%s", waitErr, log.String())
	}
	other := serveOther(t, stack{"gin", wireGin, http1, false})
	lb := newBalancer(a)
	tr := drive(t, target{
		calls:    http1(t, lb),
		lb:       lb,
		other:    other,
		slowIn:   slowIn,
		shutdown: func() { syscall.Kill(cmd.Process.Pid, syscall.SIGTERM) },
		done:     exited,
	})
	<-exited
	out := log.String()
	code := cmd.ProcessState.ExitCode()
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		t.Fatalf("ginservice: %v", waitErr)
	}
	if code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	for _, want := range []string{`INFO shutdown: started cause="shutdown: received SIGTERM"`, "INFO shutdown: finished elapsed=", "INFO exiting"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	ended := strings.Count(out, "stream ended by shutdown")
	tr.check(t, ended, false)
	if t.Failed() {
		t.Logf("ginservice's output:\n%s", out)
	}
	t.Logf("exit code: the process's; exit time: SIGTERM to its exit, drain delay %v\n%s\n%s",
		drain, tableHead, row{"gin, SIGTERM to a process", tr, ended, code})
}
