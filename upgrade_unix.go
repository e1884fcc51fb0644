//go:build unix

package shutdown

// This file starts the new process of an upgrade and waits for its Ready;
// restart_unix.go is what the new process inherits.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startDir is the working directory at the start, against which a relative
// os.Args[0] is resolved.
var startDir, _ = os.Getwd()

// binary is the program Upgrade starts: os.Args[0] resolved now.
func binary() (string, error) {
	a := os.Args[0]
	switch {
	case a == "":
	case !strings.Contains(a, "/"):
		if p, err := exec.LookPath(a); err == nil {
			return p, nil
		}
	case filepath.IsAbs(a):
		return a, nil
	default:
		return filepath.Join(startDir, a), nil
	}
	return os.Executable()
}

// dupListeners returns close-on-exec copies of the fds of the listeners
// still open, and what to tell the new process about them, numbered from
// first. The copies share the sockets' file descriptions, whose
// non-blocking mode they leave alone: File.Fd would switch it to blocking,
// after which this process's Accept would ignore Close.
func dupListeners(ls []*listener, first int) (fds []int, passed []passedSock) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	for _, l := range ls {
		err := control(l.l, func(fd int) {
			d, err := syscall.Dup(fd)
			if err != nil {
				return
			}
			syscall.CloseOnExec(d)
			passed = append(passed, passedSock{Network: l.network, Addr: l.addr, FD: first + len(fds), Systemd: l.systemd})
			fds = append(fds, d)
		})
		_ = err // a closed listener is not passed
	}
	return fds, passed
}

// startNew starts the new process, path (or os.Args[0] when empty), on ls
// and returns its pid once it is Ready within timeout, or an error saying
// how it failed, after killing its group.
func startNew(m *Manager, ls []*listener, path string, timeout time.Duration) (int, error) {
	if path == "" {
		var err error
		if path, err = binary(); err != nil {
			return 0, fmt.Errorf("shutdown: Upgrade: finding the binary: %w", err)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("shutdown: Upgrade: %w", err)
	}
	defer r.Close()
	fds, passed := dupListeners(ls, 4)
	st, _ := json.Marshal(upgradeState{Ready: 3, PGID: syscall.Getpgrp(), Listeners: passed})
	files := []uintptr{0, 1, 2, w.Fd()}
	for _, fd := range fds {
		files = append(files, uintptr(fd))
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, upgradeEnv+"=") })
	// In the directory this process started in, so that a relative
	// os.Args[0] or argument means in the new process what it meant here,
	// and the new process's own Upgrade resolves its os.Args[0] there too.
	pid, err := syscall.ForkExec(path, os.Args, &syscall.ProcAttr{Dir: startDir,
		Env: append(env, upgradeEnv+"="+string(st)), Files: files, Sys: &syscall.SysProcAttr{Setpgid: true}})
	w.Close()
	for _, fd := range fds {
		syscall.Close(fd)
	}
	if err != nil {
		return 0, fmt.Errorf("shutdown: Upgrade: starting %s: %w", path, err)
	}
	m.log(slog.LevelInfo, "shutdown: upgrade started", slog.String("binary", path), slog.Int("pid", pid))
	return waitReady(m, pid, r, timeout)
}

// waitReady waits for the new process pid to report Ready on r. It hears
// of the process's exit by SIGCHLD, not from a goroutine blocked in wait,
// since after Ready nothing here may outlive Upgrade: the new process runs
// on.
func waitReady(m *Manager, pid int, r *os.File, timeout time.Duration) (int, error) {
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	ready := make(chan int, 1)
	go func() {
		defer close(ready)
		var rpid int
		if _, err := fmt.Fscanf(r, "ready %d\n", &rpid); err == nil {
			ready <- rpid
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var why string
	for why == "" {
		if st, exited := reap(pid, syscall.WNOHANG); exited {
			select {
			case rpid, ok := <-ready:
				if ok && m.takeOver() { // Ready, then a quick exit: the upgrade happened
					return rpid, nil
				}
			default:
			}
			syscall.Kill(-pid, syscall.SIGKILL) // its children, if any
			return 0, fmt.Errorf("shutdown: Upgrade: new process %d exited before Ready: %s", pid, st)
		}
		select {
		case rpid, ok := <-ready:
			switch {
			case !ok:
				ready = nil // the pipe closed: it exits, most likely
			case m.takeOver():
				return rpid, nil
			default: // a shutdown or Release came first
				why = "shutdown started before Ready"
				if isReleased(m) {
					why = "the Manager was released before Ready"
				}
			}
		case <-chld:
		case <-t.C:
			why = fmt.Sprintf("not Ready within %v", timeout)
		case <-m.stopping:
			why = "shutdown started before Ready"
		case <-m.quit:
			why = "the Manager was released before Ready"
		}
	}
	// The process itself too: had it just rejoined this group after Ready,
	// its own group would miss it, and the wait below would not end.
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	st, _ := reap(pid, 0)
	return 0, fmt.Errorf("shutdown: Upgrade: new process %d %s; killed with its process group: %s", pid, why, st)
}

// reap waits for the child pid (with options, syscall.WNOHANG not to
// block) and says how it ended, as os.ProcessState does.
func reap(pid, options int) (status string, exited bool) {
	var ws syscall.WaitStatus
	for {
		wpid, err := syscall.Wait4(pid, &ws, options, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return err.Error(), true // not a child of ours (any more)
		case wpid == 0:
			return "", false
		case ws.Exited():
			return "exit status " + strconv.Itoa(ws.ExitStatus()), true
		case ws.Signaled():
			return "signal: " + ws.Signal().String(), true
		default: // not asked for (WUNTRACED, WCONTINUED): not an end
			return "", false
		}
	}
}
