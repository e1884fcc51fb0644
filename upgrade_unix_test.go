//go:build unix

package shutdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file's init runs after signal_unix_test.go's (files initialise in
// name order), so it chains to the child that one set.
func init() {
	prev := childMain
	childMain = func(mode string) int {
		if mode == "upgrade" {
			return upgradeChild()
		}
		return prev(mode)
	}
}

// Variables that steer upgradeChild; the new process inherits them.
const (
	newEnv = "SHUTDOWN_TEST_NEW" // what the new process does: ok, exit, panic, stop, stopready, hang
	netEnv = "SHUTDOWN_TEST_NET" // Listen's network and address, "tcp 127.0.0.1:0"
	// NOTIFY_SOCKET, which TestMain unsets; the child sets it back.
	notifyEnv = "SHUTDOWN_TEST_NOTIFY"
	// A directory every generation changes to once started, as a daemon
	// that chdirs to / does.
	chdirEnv = "SHUTDOWN_TEST_CHDIR"
)

// upgradeChild is a service that Listens, serves its pid over HTTP, is
// Ready, and upgrades when its stdin says so (the old process) or on
// SIGHUP. Its lines, prefixed by what they report and its pid, are the
// parent's evidence; every generation writes to the same stdout.
func upgradeChild() int {
	upgraded := os.Getenv(upgradeEnv) != ""
	if p := os.Getenv(notifyEnv); p != "" {
		os.Setenv("NOTIFY_SOCKET", p)
	}
	if d := os.Getenv(chdirEnv); d != "" {
		if err := os.Chdir(d); err != nil {
			fmt.Println("chdir:", err)
			return 2
		}
	}
	opts := []Option{WithSignals(syscall.SIGTERM), WithUpgradeSignal(syscall.SIGHUP), WithTimeout(10 * time.Second),
		WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))}
	m := New(opts...)
	network, addr, _ := strings.Cut(os.Getenv(netEnv), " ")
	l, err := m.Listen(network, addr)
	if err != nil {
		fmt.Println("listen:", err)
		return 2
	}
	if upgraded {
		switch os.Getenv(newEnv) {
		case "exit":
			return 3
		case "panic":
			panic("new process panics after Listen")
		case "stop": // its start fails: a shutdown before Ready
			m.Trigger()
			m.Wait()
			return 3
		case "stopready": // a component fails at once; main calls Ready all the same
			m.Trigger()
			fmt.Println("late ready:", m.Ready())
			m.Wait()
			return 3
		case "hang":
			fmt.Println("hanging", os.Getpid())
			time.Sleep(time.Hour) // killed by the old process
		}
	}
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, pid) })
	mux.Handle("/readyz", m.ReadinessHandler())
	srv := &http.Server{Handler: m.Handler(mux)}
	m.Add("http", HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(l) })
	if err := m.Ready(); err != nil {
		fmt.Println("ready:", err)
		return 2
	}
	fmt.Printf("ready %d %s %d\n", pid, l.Addr(), syscall.Getpgrp())
	if !upgraded {
		go upgradeCommands(m)
	}
	err = m.Wait()
	asyncUpgrades.Wait() // their lines first
	fmt.Printf("exit %d: cause %v; result %v\n", pid, context.Cause(m.Context()), err)
	if err != nil {
		return 1
	}
	return 0
}

// asyncUpgrades are the Upgrade calls of "async" commands.
var asyncUpgrades sync.WaitGroup

// upgradeCommands reads "upgrade <what the new process does> [binary]",
// "async ..." (the same on a goroutine of its own) and "release" lines
// from stdin.
func upgradeCommands(m *Manager) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "release" {
			m.Release()
			continue
		}
		if len(f) < 2 {
			continue
		}
		os.Setenv(newEnv, f[1])
		// Short only where the new process hangs: under load, a new
		// process that is fine may take seconds to start.
		m.rs.mu.Lock()
		m.cfg.upgradeTimeout = DefaultUpgradeTimeout
		if f[1] == "hang" {
			m.cfg.upgradeTimeout = 2 * time.Second
		}
		m.cfg.binary = ""
		if len(f) > 2 {
			m.cfg.binary = f[2]
		}
		m.rs.mu.Unlock()
		up := func() { fmt.Printf("upgrade %d %s: %v\n", os.Getpid(), f[1], m.Upgrade()) }
		if f[0] == "async" {
			asyncUpgrades.Go(up)
		} else {
			up()
		}
	}
}

// upChild is an upgradeChild and the generations it started.
type upChild struct {
	*child
	stdin   io.WriteCloser
	pending []string // lines read but not asked for yet
}

// dialUntil connects to addr, waiting for someone to listen on it.
func dialUntil(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conn, err := net.Dial(network, addr)
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
	}
}

// startUpgradeChild starts the first generation and waits for its ready
// line; it returns the pid and address from it.
func startUpgradeChild(t *testing.T, env ...string) (c *upChild, pid int, addr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=upgrade", netEnv + "=tcp 127.0.0.1:0"}, env...)...)
	c = startGeneration(t, cmd)
	pid, addr = c.ready(t)
	return c, pid, addr
}

// startGeneration starts cmd, an upgradeChild or what runs one, with its
// stdin and stdout piped to the test.
func startGeneration(t *testing.T, cmd *exec.Cmd) *upChild {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// A file, not a pipe: every generation writes to it, and Wait would
	// wait for the last of them to close a pipe.
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &upChild{child: &child{cmd: cmd, lines: make(chan string, 100)}, stdin: stdin}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(stderr.Name())
			t.Logf("children's stderr:\n%s", b)
		}
		stderr.Close()
	})
	return c
}

// next returns the first line not returned yet that starts with prefix:
// the generations' lines interleave.
func (c *upChild) next(t *testing.T, prefix string) string {
	t.Helper()
	for i, line := range c.pending {
		if strings.HasPrefix(line, prefix) {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return line
		}
	}
	timeout := time.NewTimer(time.Minute) // hang guard
	defer timeout.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child output ended without %q:\n%s", prefix, c.out.String())
			}
			c.out.WriteString(line + "\n")
			if strings.HasPrefix(line, prefix) {
				return line
			}
			c.pending = append(c.pending, line)
		case <-timeout.C:
			t.Fatalf("no %q within a minute:\n%s", prefix, c.out.String())
		}
	}
}

// ready reads the next ready line and kills its process at the end of
// the test, unless it exited.
func (c *upChild) ready(t *testing.T) (int, string) {
	t.Helper()
	var pid, pgid int
	var addr string
	line := c.next(t, "ready ")
	if _, err := fmt.Sscanf(line, "ready %d %s %d", &pid, &addr, &pgid); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	// Ready rejoins the first generation's process group (the test's).
	if want := syscall.Getpgrp(); pgid != want {
		t.Errorf("pid %d is in process group %d after Ready, want %d", pid, pgid, want)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid, addr
}

// exitCode waits for the first generation to exit. Its stdout closes then,
// so read the lines needed first.
func (c *upChild) exitCode(t *testing.T) int {
	t.Helper()
	err := c.cmd.Wait()
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return c.cmd.ProcessState.ExitCode()
}

func (c *upChild) command(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
}

// servingPid asks addr for the pid that serves it, on a connection of its own.
func servingPid(t *testing.T, addr string) int {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("GET %s = %q", addr, b)
	}
	return pid
}

// exitLine is what a generation prints when Wait has returned nil after
// an upgrade to newPid.
func exitLine(pid, newPid int) string {
	return fmt.Sprintf("exit %d: cause shutdown: upgraded to pid %d; result <nil>", pid, newPid)
}

// An idle service (no connection ever accepted) upgrades: the new process
// serves on the same port, and the old one, whose Accept was parked on
// the socket, still exits 0 with Wait's nil result.
func TestUpgradeOfIdleServiceOldProcessExits(t *testing.T) {
	t.Parallel()
	c, old, addr := startUpgradeChild(t)
	c.command(t, "upgrade ok")
	newPid, newAddr := c.ready(t)
	if got := c.next(t, "upgrade "); got != fmt.Sprintf("upgrade %d ok: <nil>", old) {
		t.Errorf("Upgrade: %q, want nil", got)
	}
	if newAddr != addr {
		t.Errorf("new process listens on %s, want the old one's %s", newAddr, addr)
	}
	if got, want := c.next(t, "exit "), exitLine(old, newPid); got != want {
		t.Errorf("old process: %q, want %q", got, want)
	}
	if code := c.exitCode(t); code != 0 {
		t.Errorf("old process exited %d, want 0", code)
	}
	if got := servingPid(t, addr); got != newPid {
		t.Errorf("after the upgrade pid %d serves, want %d", got, newPid)
	}
}

// Each failure of the new process leaves the old one serving, Upgrade says
// which failure it was, and the next upgrade succeeds.
func TestUpgradeFailureKeepsOldProcessServing(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	wrapper := filepath.Join(dir, "wrapper.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	// A wrapper whose child holds the sockets and the Ready pipe: killing
	// the wrapper alone would leave the socket open in the sleep.
	os.WriteFile(wrapper, []byte("#!/bin/sh\nsleep 300 &\necho sleeper $!\nwait\n"), 0o755)
	for _, tc := range []struct{ name, cmd, want string }{
		{"missing", "upgrade ok " + filepath.Join(dir, "missing"), "starting " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{"not executable", "upgrade ok " + notExec, "starting " + notExec + ": permission denied"},
		{"exits", "upgrade exit", "exited before Ready: exit status 3"},
		{"panics", "upgrade panic", "exited before Ready: exit status 2"},
		{"hangs", "upgrade hang", "not Ready within 2s; killed with its process group: signal: killed"},
		{"wrapper hangs", "upgrade hang " + wrapper, "not Ready within 2s; killed with its process group: signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, old, addr := startUpgradeChild(t)
			c.command(t, tc.cmd)
			var sleeper int
			if strings.Contains(tc.cmd, "wrapper") {
				fmt.Sscanf(c.next(t, "sleeper "), "sleeper %d", &sleeper)
			}
			got := c.next(t, "upgrade ")
			if !strings.HasPrefix(got, fmt.Sprintf("upgrade %d ", old)) || !strings.Contains(got, tc.want) {
				t.Errorf("Upgrade: %q, want an error with %q", got, tc.want)
			}
			if sleeper != 0 {
				waitGone(t, sleeper)
			}
			if got := servingPid(t, addr); got != old {
				t.Errorf("after the failed upgrade pid %d serves, want the old %d", got, old)
			}
			c.command(t, "upgrade ok")
			newPid, _ := c.ready(t)
			if got := c.next(t, "exit "); got != exitLine(old, newPid) {
				t.Errorf("old process after the next upgrade: %q", got)
			}
		})
	}
}

// waitGone polls until pid is gone (or a zombie nobody reaps yet).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
	}
	t.Errorf("the wrapper's child %d outlived the failed upgrade, holding the socket", pid)
}

// A second Upgrade during one fails at once; a shutdown signal during one
// kills the unready new process, then shuts down as usual.
func TestUpgradeDuringUpgradeAndSignalDuringUpgrade(t *testing.T) {
	t.Parallel()
	c, old, _ := startUpgradeChild(t)
	c.command(t, "async hang")
	c.next(t, "hanging ")
	c.command(t, "upgrade ok")
	if got, want := c.next(t, "upgrade "), fmt.Sprintf("upgrade %d ok: shutdown: Upgrade: another upgrade is running", old); got != want {
		t.Errorf("second Upgrade: %q, want %q", got, want)
	}
	c.kill(t, syscall.SIGTERM)
	if got := c.next(t, "upgrade "); !strings.Contains(got, "shutdown started before Ready; killed with its process group: signal: killed") {
		t.Errorf("Upgrade during shutdown: %q", got)
	}
	if got, want := c.next(t, "exit "), fmt.Sprintf("exit %d: cause shutdown: received SIGTERM; result <nil>", old); got != want {
		t.Errorf("old process: %q, want %q", got, want)
	}
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestWithUpgradeSignalPanicsForShutdownAndUncatchableSignals(t *testing.T) {
	wantPanic(t, "shutdown: WithUpgradeSignal: SIGTERM is a shutdown signal", func() { New(WithUpgradeSignal(syscall.SIGTERM)) })
	wantPanic(t, "shutdown: WithUpgradeSignal: SIGINT is a shutdown signal", func() { New(WithUpgradeSignal(os.Interrupt)) })
	wantPanic(t, "shutdown: WithUpgradeSignal: SIGKILL cannot be caught", func() { New(WithUpgradeSignal(syscall.SIGKILL)) })
	wantPanic(t, "shutdown: WithUpgradeSignal: SIGSTOP cannot be caught", func() { New(WithUpgradeSignal(syscall.SIGSTOP)) })
}

// SIGHUP upgrades; the new process upgrades again as soon as it is Ready,
// while the one before still shuts down. Each old one exits with nil, and
// the last one serves.
func TestUpgradeSignalChainsGenerations(t *testing.T) {
	t.Parallel()
	c, pid, addr := startUpgradeChild(t)
	first := pid
	pids := []int{pid}
	for range 3 {
		syscall.Kill(pid, syscall.SIGHUP)
		next, _ := c.ready(t)
		pids = append(pids, next)
		pid = next
	}
	for i, p := range pids[:3] {
		if got, want := c.next(t, fmt.Sprintf("exit %d:", p)), exitLine(p, pids[i+1]); got != want {
			t.Errorf("generation %d: %q, want %q", i, got, want)
		}
	}
	if got := servingPid(t, addr); got != pid {
		t.Errorf("pid %d serves, want the last generation %d", got, pid)
	}
	if first != c.cmd.Process.Pid {
		t.Fatal("the first ready line is not the child's")
	}
	if code := c.exitCode(t); code != 0 {
		t.Errorf("first generation exited %d, want 0", code)
	}
}

// Release during an upgrade kills the unready new process.
func TestReleaseDuringUpgradeKillsNewProcess(t *testing.T) {
	t.Parallel()
	c, old, _ := startUpgradeChild(t)
	c.command(t, "async hang")
	hanging := c.next(t, "hanging ")
	c.command(t, "release")
	if got := c.next(t, "upgrade "); !strings.Contains(got, "the Manager was released before Ready; killed with its process group: signal: killed") {
		t.Errorf("Upgrade during Release: %q", got)
	}
	var pid int
	fmt.Sscanf(hanging, "hanging %d", &pid)
	waitGone(t, pid)
	if got, want := c.next(t, "exit "), fmt.Sprintf("exit %d: cause shutdown: released; result <nil>", old); got != want {
		t.Errorf("old process: %q, want %q", got, want)
	}
}
