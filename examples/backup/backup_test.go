//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bin is the program under test, built once by TestMain (with -race when
// the tests run with -race, so the child is checked for data races too).
var bin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "backup-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "backup")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	// go test puts its own GOROOT/bin first in PATH, so "go" is the
	// toolchain that runs the test.
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

// run is one child process of the program under test.
type run struct {
	dir      string
	cmd      *exec.Cmd
	stdout   *bufio.Scanner
	stderr   bytes.Buffer
	accepted int      // the last "accepted N" read so far
	other    []string // the lines on stdout that are not "accepted N"
}

// start runs the program in a new directory. The context is a hang guard
// only: it kills the child long after any healthy run has ended.
func start(t *testing.T) *run {
	t.Helper()
	guard := 30 * time.Second
	if d, ok := t.Deadline(); ok {
		guard = min(guard, time.Until(d)*9/10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	r := &run{dir: t.TempDir()}
	r.cmd = exec.CommandContext(ctx, bin, "-dir", r.dir)
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil { // the test failed before Wait
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	})
	r.stdout = bufio.NewScanner(out)
	return r
}

// readUntil reads stdout until the child has accepted n records, or to the
// end when n is 0. It fails the test if the records are not numbered 1, 2,
// 3, ... or if stdout ends first.
func (r *run) readUntil(t *testing.T, n int) {
	t.Helper()
	for n == 0 || r.accepted < n {
		if !r.stdout.Scan() {
			if n == 0 {
				return
			}
			r.cmd.Wait()
			t.Fatalf("stdout ended after %d accepted records, want %d; stderr:\n%s", r.accepted, n, r.stderr.String())
		}
		line := r.stdout.Text()
		num, ok := strings.CutPrefix(line, "accepted ")
		if !ok {
			r.other = append(r.other, line)
			continue
		}
		if got, err := strconv.Atoi(num); err != nil || got != r.accepted+1 || len(r.other) > 0 {
			t.Fatalf("stdout line %q after accepted %d and %q, want \"accepted %d\"", line, r.accepted, r.other, r.accepted+1)
		}
		r.accepted++
	}
}

// records returns "record 1\n" ... "record n\n".
func records(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "record %d\n", i)
	}
	return b.String()
}

func TestGracefulSignalKeepsEveryRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
	}{
		{syscall.SIGTERM, "SIGTERM"},
		{syscall.SIGINT, "SIGINT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := start(t)
			r.readUntil(t, 200)
			if err := syscall.Kill(r.cmd.Process.Pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			r.readUntil(t, 0)
			if err := r.cmd.Wait(); err != nil {
				t.Fatalf("exit after %s: %v, want exit code 0; stderr:\n%s", tc.name, err, r.stderr.String())
			}
			if bytes.Contains(r.stderr.Bytes(), []byte("DATA RACE")) {
				t.Errorf("data race in the child:\n%s", r.stderr.String())
			}

			backup := filepath.Join(r.dir, "backup.log")
			want := fmt.Sprintf("shutdown: received %s; backup written to %s", tc.name, backup)
			if len(r.other) != 1 || r.other[0] != want {
				t.Errorf("stdout after the records = %q, want [%q]", r.other, want)
			}
			data, err := os.ReadFile(filepath.Join(r.dir, "data.log"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(data), records(r.accepted); got != want {
				t.Errorf("data.log has %d lines, want exactly record 1..%d in order", strings.Count(got, "\n"), r.accepted)
			}
			copied, err := os.ReadFile(backup)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(copied, data) {
				t.Errorf("backup.log (%d bytes) differs from data.log (%d bytes)", len(copied), len(data))
			}
			leftovers, _ := filepath.Glob(filepath.Join(r.dir, "backup.log.tmp*"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left behind: %q", leftovers)
			}
			if !t.Failed() {
				t.Logf("%s after %d accepted records: all %d in data.log and backup.log", tc.name, r.accepted, r.accepted)
			}
		})
	}
}

// TestSIGKILLLosesTheBuffer shows the loss: SIGKILL cannot be caught, so the
// records still in the program's buffer never reach data.log. What did reach
// the kernel with write(2) survives, as a prefix of the records. The test
// asserts the death and that prefix; the loss is reported, not asserted.
func TestSIGKILLLosesTheBuffer(t *testing.T) {
	t.Parallel()
	r := start(t)
	// 1000 records are about 11 KB: a few 4 KiB buffers have been written
	// to the kernel, the rest is in the buffer.
	r.readUntil(t, 1000)
	if err := syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.readUntil(t, 0)
	err := r.cmd.Wait()
	ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("Wait() = %v, want death by SIGKILL; stderr:\n%s", err, r.stderr.String())
	}
	if len(r.other) != 0 {
		t.Errorf("stdout after the records = %q, want nothing: SIGKILL runs no code", r.other)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "backup.log")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("backup.log after SIGKILL: Stat() = %v, want it missing", err)
	}

	data, err := os.ReadFile(filepath.Join(r.dir, "data.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel got whole 4 KiB buffers, so the file may end inside a line;
	// count the complete lines, which must be record 1..n.
	complete := data[:bytes.LastIndexByte(data, '\n')+1]
	n := bytes.Count(complete, []byte("\n"))
	if got := string(complete); got != records(n) {
		t.Fatalf("data.log does not start with record 1..%d in order:\n%.200s", n, got)
	}
	// A record can reach the kernel just before its "accepted" line is
	// printed, so n may exceed the count by one.
	if n > r.accepted+1 {
		t.Errorf("data.log has %d records, more than the %d accepted", n, r.accepted)
	}
	t.Logf("SIGKILL after %d accepted records: %d reached data.log (%d bytes), %d lost with the buffer",
		r.accepted, n, len(data), r.accepted-n)
}
