//go:build unix

package shutdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() { childMain = signalChild }

// signalChild is the child process of the real-signal tests. It registers
// hooks, prints "ready" and waits for a real signal; what it prints and its
// exit code are the parent's evidence.
func signalChild(mode string) int {
	opts := []Option{WithLogger(discard)}
	block := make(chan struct{}) // never closed: a hook that never returns
	switch mode {
	case "order":
	case "drain":
		opts = append(opts, WithDrainDelay(time.Second), WithTimeout(5*time.Second))
	case "stuck":
	case "budget":
		opts = append(opts, WithTimeout(time.Second))
	case "panicking-log", "panicking-log-stuck":
		opts = append(opts, WithLogger(slog.New(panickingHandler{Handler: slog.NewTextHandler(io.Discard, nil)})))
	case "stopped":
		// 100 Managers that a failing constructor made and released: none
		// of them may catch the SIGINT that follows.
		for range 100 {
			New(opts...).Release()
		}
		fmt.Println("ready")
		time.Sleep(time.Minute) // the parent's SIGINT ends the process first
		fmt.Println("SIGINT did not end the process")
		return 0
	default:
		fmt.Println("unknown mode", mode)
		return 2
	}
	m := New(opts...)
	for _, name := range []string{"db", "cache", "http"} {
		m.Add(name, func(ctx context.Context) error {
			fmt.Println("hook", name)
			if name == "http" && (mode == "stuck" || mode == "budget" || mode == "panicking-log-stuck") {
				select {
				case <-block:
				case <-time.After(time.Hour): // keeps the runtime's deadlock check quiet
				}
			}
			return nil
		})
	}
	fmt.Println("ready")
	err := m.Wait()
	fmt.Printf("cause: %v\n", context.Cause(m.Context()))
	fmt.Printf("result: %v\n", err)
	if err != nil {
		return 1
	}
	return 0
}

// child is a running child process and its stdout lines.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	out   strings.Builder
}

// startChild runs the test binary in child mode and waits for "ready", so no
// signal meets the default action before New has installed the handler.
func startChild(t *testing.T, mode string) *child {
	t.Helper()
	timeout := time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d) * 9 / 10
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	c.expect(t, "ready")
	return c
}

// expect reads lines until want, and fails if the output ends first.
func (c *child) expect(t *testing.T, want string) {
	t.Helper()
	for line := range c.lines {
		c.out.WriteString(line + "\n")
		if line == want {
			return
		}
	}
	t.Fatalf("child output ended without %q:\n%s", want, c.out.String())
}

// wait reads the rest of the output and returns it with the exit code.
func (c *child) wait(t *testing.T) (string, int) {
	t.Helper()
	for line := range c.lines {
		c.out.WriteString(line + "\n")
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("child: %v", err)
	}
	return c.out.String(), c.cmd.ProcessState.ExitCode()
}

func (c *child) kill(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(c.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
}

func TestRealSignalRunsHooksLastFirst(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(signalName(sig), func(t *testing.T) {
			t.Parallel()
			c := startChild(t, "order")
			c.kill(t, sig)
			out, code := c.wait(t)
			want := fmt.Sprintf("ready\nhook http\nhook cache\nhook db\ncause: shutdown: received %s\nresult: <nil>\n", signalName(sig))
			if out != want || code != 0 {
				t.Errorf("child printed %q and exited %d, want %q and 0", out, code, want)
			}
		})
	}
}

func TestRealSignalDrainDelay(t *testing.T) {
	t.Parallel()
	c := startChild(t, "drain")
	sent := time.Now()
	c.kill(t, syscall.SIGTERM)
	c.expect(t, "hook http")
	if got := time.Since(sent); got < time.Second {
		t.Errorf("first hook ran %v after SIGTERM, want not before the 1s drain delay", got)
	}
	if _, code := c.wait(t); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

func TestRealSecondSignalExits143(t *testing.T) {
	t.Parallel()
	c := startChild(t, "stuck")
	c.kill(t, syscall.SIGTERM)
	c.expect(t, "hook http") // the hook is now blocked
	c.kill(t, syscall.SIGTERM)
	out, code := c.wait(t)
	if code != 143 {
		t.Errorf("exit code = %d, want 143 (128+SIGTERM)", code)
	}
	if strings.Contains(out, "hook cache") {
		t.Errorf("child ran later hooks after the forced exit:\n%s", out)
	}
}

// A log handler that panics on every record, under real signals: the
// shutdown runs every hook and exits 0 (on 2c1f02a the process died with
// exit 2 before the database hook ran), and a second SIGTERM still exits
// with 143.
func TestRealSignalWithPanickingLogHandler(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		t.Parallel()
		c := startChild(t, "panicking-log")
		c.kill(t, syscall.SIGTERM)
		out, code := c.wait(t)
		want := "ready\nhook http\nhook cache\nhook db\ncause: shutdown: received SIGTERM\nresult: <nil>\n"
		if out != want || code != 0 {
			t.Errorf("child printed %q and exited %d, want %q and 0", out, code, want)
		}
	})
	t.Run("second signal", func(t *testing.T) {
		t.Parallel()
		c := startChild(t, "panicking-log-stuck")
		c.kill(t, syscall.SIGTERM)
		c.expect(t, "hook http") // the hook is now blocked
		c.kill(t, syscall.SIGTERM)
		if out, code := c.wait(t); code != 143 {
			t.Errorf("exit code = %d, want 143 (128+SIGTERM); output:\n%s", code, out)
		}
	})
}

func TestRealStuckHookStillExits(t *testing.T) {
	t.Parallel()
	c := startChild(t, "budget")
	sent := time.Now()
	c.kill(t, syscall.SIGTERM)
	out, code := c.wait(t)
	elapsed := time.Since(sent)
	if elapsed < time.Second {
		t.Errorf("child exited %v after SIGTERM, want not before the 1s budget", elapsed)
	}
	// Hang guard only, generous for a loaded machine under -race -count=3:
	// the assertion is on what the child printed and its exit code.
	if elapsed > 30*time.Second {
		t.Errorf("child exited %v after SIGTERM, want within the 1s budget (30s hang guard)", elapsed)
	}
	want := "result: shutdown: hook \"http\": timed out after the 1s budget\nshutdown: hook \"cache\": skipped: the 1s budget was spent\nshutdown: hook \"db\": skipped: the 1s budget was spent\n"
	if code != 1 || !strings.HasSuffix(out, want) {
		t.Errorf("child printed %q and exited %d, want suffix %q and 1", out, code, want)
	}
}

func TestSIGSTOPPanics(t *testing.T) {
	wantPanic(t, "shutdown: WithSignals: SIGSTOP cannot be caught", func() { WithSignals(syscall.SIGTERM, syscall.SIGSTOP) })
}

func TestSignalNames(t *testing.T) {
	for sig, want := range map[os.Signal]string{
		syscall.SIGTERM: "shutdown: received SIGTERM",
		syscall.SIGINT:  "shutdown: received SIGINT",
		syscall.SIGHUP:  "shutdown: received SIGHUP",
		syscall.SIGQUIT: "shutdown: received SIGQUIT",
		syscall.SIGUSR1: "shutdown: received user defined signal 1",
	} {
		if got := (&SignalError{sig}).Error(); got != want {
			t.Errorf("signalError{%v}.Error() = %q, want %q", sig, got, want)
		}
	}
}

// After Release, a signal gets its default action again: SIGINT ends the
// process, which 100 released Managers do not catch.
func TestRealSignalAfterReleaseGetsDefaultAction(t *testing.T) {
	c := startChild(t, "stopped")
	c.kill(t, syscall.SIGINT)
	out, _ := c.wait(t)
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("child ended with %v, want killed by SIGINT; output:\n%s", c.cmd.ProcessState, out)
	}
}
