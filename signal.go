package shutdown

// This file holds what the Manager hears from and tells its supervisor:
// signals, the forced exit, and systemd's STOPPING=1.

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"time"
)

// watchSignals reads signals until shutdown has finished or Stop is called.
// It never calls user code (loggers included) itself: a stuck log handler
// must not stop the forced exit.
func (m *Manager) watchSignals() {
	defer close(m.sigDone)
	defer signal.Stop(m.sigCh)
	first := true
	for {
		select {
		case <-m.done:
			return
		case <-m.quit:
			return
		case sig := <-m.sigCh:
			if first {
				// Even when Trigger or a component started shutdown
				// already, this signal counts as the first one.
				first = false
				m.begin(&SignalError{Signal: sig}, nil, nil)
				continue
			}
			m.laterSignal(sig)
		}
	}
}

// laterSignal handles a signal after the first (DESIGN step 7).
func (m *Manager) laterSignal(sig os.Signal) {
	if !m.cfg.forceExit {
		m.mu.Lock()
		inDrain := m.state == draining && m.cfg.drain > 0 && !m.skipDrain
		m.mu.Unlock()
		m.cutOnce.Do(func() { close(m.drainCut) })
		msg := "shutdown: signal received during shutdown; ignored"
		if inDrain {
			msg = "shutdown: signal received during shutdown; ending the drain delay early"
		}
		m.log(slog.LevelWarn, msg, slog.String("signal", signalName(sig)))
		return
	}
	m.mu.Lock()
	now := time.Now()
	var tasks []*task
	for _, c := range m.comps {
		if !c.returned() {
			tasks = append(tasks, &c.task)
		}
	}
	tasks = append(tasks, m.running...)
	m.mu.Unlock()
	// The record goes out on a goroutine of its own, not through the log
	// queue, which a stuck handler may hold: the exit waits for it 1s at most.
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		st := stacks(m.ownGoroutines(nil), tasks...)
		attrs := []slog.Attr{slog.String("signal", signalName(sig)), slog.Int("code", 128+signalNumber(sig))}
		for _, t := range tasks {
			attrs = append(attrs, slog.Group("running", slog.String(t.kind.key(), t.name),
				slog.Duration("elapsed", now.Sub(t.start)), slog.String("stack", string(st[t]))))
		}
		r := slog.NewRecord(time.Now(), slog.LevelError, "shutdown: second signal; exiting at once", 0)
		r.AddAttrs(attrs...)
		m.logs.handle(logger(m.cfg.logger).Handler(), r) // a panicking handler does not stop the exit
	}()
	t := time.NewTimer(time.Second)
	select {
	case <-logged:
	case <-t.C:
	}
	t.Stop()
	m.cfg.exit(128 + signalNumber(sig))
}

// SignalError is the cause of a signal-started shutdown, as
// [context.Cause] of [Manager.Context] returns it. It never enters the
// result of [Manager.Wait], whichever Manager it comes from and whoever
// returns it (a hook, a component, Run's function, [Manager.TriggerCause]):
// a signal is how a clean shutdown starts.
type SignalError struct {
	Signal os.Signal // the first signal received
}

// Error says which signal arrived: "shutdown: received SIGTERM".
func (e *SignalError) Error() string { return "shutdown: received " + signalName(e.Signal) }

// ExitCode returns 128 plus the signal's number, the code a shell reports
// for a process that a signal ended (130 after Ctrl-C, 143 after SIGTERM),
// for a command-line tool that wants that convention:
//
//	if se := (*shutdown.SignalError)(nil); errors.As(context.Cause(m.Context()), &se) {
//		os.Exit(se.ExitCode())
//	}
//
// A service should exit 0 after a clean shutdown instead: supervisors read
// a non-zero code as a failure. Where a signal has no number (plan9), it is
// 129.
func (e *SignalError) ExitCode() int { return 128 + signalNumber(e.Signal) }

// notifySystemd sends state to systemd's notification socket, as
// sd_notify(3) does, when NOTIFY_SOCKET is set: a path, or an abstract
// socket starting with '@'. Without NOTIFY_SOCKET it does nothing. A full
// socket queue makes the write give up after 10ms rather than block.
func notifySystemd(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	defer conn.Close()
	// A deadline already past would fail before trying; this one lets the
	// write go through when the queue has room and gives up soon when not.
	conn.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	return nil
}

// signalName spells the usual signals the way people write them.
func signalName(s os.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return s.String()
}
