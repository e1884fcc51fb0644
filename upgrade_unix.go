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
	"path/filepath"
	"slices"
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

// waitReady waits for the new process pid to report Ready on r.
func waitReady(m *Manager, pid int, r *os.File, timeout time.Duration) (int, error) {
	exited := make(chan *os.ProcessState, 1)
	if p, err := os.FindProcess(pid); err == nil {
		go func() {
			st, _ := p.Wait()
			exited <- st
		}()
	}
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
		select {
		case rpid, ok := <-ready:
			if ok {
				return rpid, nil
			}
			ready = nil // the pipe closed: it exits, most likely
		case st := <-exited:
			syscall.Kill(-pid, syscall.SIGKILL) // its children, if any
			return 0, fmt.Errorf("shutdown: Upgrade: new process %d exited before Ready: %v", pid, st)
		case <-t.C:
			why = fmt.Sprintf("not Ready within %v", timeout)
		case <-m.stopping:
			why = "shutdown started before Ready"
		case <-m.quit:
			why = "the Manager was released before Ready"
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	st := <-exited
	return 0, fmt.Errorf("shutdown: Upgrade: new process %d %s; killed with its process group: %v", pid, why, st)
}
