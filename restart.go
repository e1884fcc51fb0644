package shutdown

// This file holds restarts without downtime on one host (DESIGN
// "Restarts"): Listen, Ready, Upgrade, their options and the old process's
// handoff. What needs unix lives in restart_unix.go.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUpgraded is what the cause of an upgrade's shutdown matches with
// [errors.Is]: once the new process started by [Manager.Upgrade] is Ready,
// [context.Cause] of [Manager.Context] says "shutdown: upgraded to pid N".
// Such a cause never enters the result of [Manager.Wait], not even through
// [Manager.TriggerCause].
var ErrUpgraded = errors.New("shutdown: upgraded")

// upgradedError is the cause of an upgrade's shutdown.
type upgradedError struct{ pid int }

func (e *upgradedError) Error() string        { return "shutdown: upgraded to pid " + strconv.Itoa(e.pid) }
func (e *upgradedError) Is(target error) bool { return target == ErrUpgraded }

// DefaultUpgradeTimeout is how long the new process of [Manager.Upgrade]
// may take to call [Manager.Ready] when no [WithUpgradeTimeout] is given.
const DefaultUpgradeTimeout = time.Minute

// handoffTime is how long the old process of an upgrade serves its open
// connections with Connection: close before Context is cancelled.
const handoffTime = time.Second

// restarts is a Manager's part of the upgrade machinery.
type restarts struct {
	mu        sync.Mutex
	listeners []*listener // returned by Listen, in order
	upgrading bool        // an Upgrade is running
	ready     bool        // Ready was called
	readyErr  error
	handoff   atomic.Bool // a new process is Ready: shut down with the handoff
}

// listener is a socket that Listen returned.
type listener struct {
	network, addr string
	l             net.Listener
	origin
	path string // a Unix socket's file, "" for TCP
}

// origin says who passed an inherited socket.
type origin struct {
	systemd bool // systemd: its file is systemd's
	old     bool // the old process of an upgrade
}

type upgradeSignalOption struct{ sig os.Signal }

// WithUpgradeSignal makes sig call [Manager.Upgrade] and log its result;
// there is none by default (SIGHUP is the usual choice, for systemd's
// `ExecReload=kill -HUP $MAINPID`). The signal stays caught after
// [Manager.Release] and during shutdown, so a late one does not end the
// process by its default action; until [Manager.Done] is closed it is
// logged. It panics if sig is nil; [New] panics if sig is one of the
// shutdown signals, SIGKILL or SIGSTOP.
func WithUpgradeSignal(sig os.Signal) Option {
	if sig == nil {
		panic("shutdown: WithUpgradeSignal: sig is nil")
	}
	return upgradeSignalOption{sig}
}

func (o upgradeSignalOption) apply(c *config) { c.upgradeSignal = o.sig }
func (o upgradeSignalOption) String() string {
	return "shutdown.WithUpgradeSignal(" + signalName(o.sig) + ")"
}

type upgradeTimeoutOption time.Duration

// WithUpgradeTimeout sets how long the new process of [Manager.Upgrade]
// may take to call [Manager.Ready]; at its end the new process is killed
// with its process group and Upgrade returns an error. It defaults to
// [DefaultUpgradeTimeout] and panics if d is not positive.
func WithUpgradeTimeout(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("shutdown: WithUpgradeTimeout: d must be positive, got %v", d))
	}
	return upgradeTimeoutOption(d)
}

func (o upgradeTimeoutOption) apply(c *config) { c.upgradeTimeout = time.Duration(o) }
func (o upgradeTimeoutOption) String() string {
	return fmt.Sprintf("shutdown.WithUpgradeTimeout(%v)", time.Duration(o))
}

type pidFileOption string

// WithPIDFile makes [Manager.Ready] write the process's id to path, as a
// decimal number and a newline, atomically (a temporary file in the same
// directory, then a rename), for systemd's PIDFile= and for scripts that
// send the upgrade signal. A shutdown that is not an upgrade removes the
// file if it still names this process. It panics if path is empty.
func WithPIDFile(path string) Option {
	if path == "" {
		panic("shutdown: WithPIDFile: path is empty")
	}
	return pidFileOption(path)
}

func (o pidFileOption) apply(c *config) { c.pidFile = string(o) }
func (o pidFileOption) String() string  { return fmt.Sprintf("shutdown.WithPIDFile(%q)", string(o)) }

// checkUpgradeSignal panics, for New, when the upgrade signal would also
// start shutdown or cannot be caught.
func checkUpgradeSignal(cfg *config) {
	sig := cfg.upgradeSignal
	if sig == nil {
		return
	}
	if uncatchable(sig) {
		panic(fmt.Sprintf("shutdown: WithUpgradeSignal: %s cannot be caught", signalName(sig)))
	}
	for _, s := range cfg.signals {
		if s == sig {
			panic(fmt.Sprintf("shutdown: WithUpgradeSignal: %s is a shutdown signal", signalName(sig)))
		}
	}
}

// Listen returns a listening socket for network ("tcp", "tcp4", "tcp6" or
// "unix") and addr, as [net.Listen] does: the plain *net.TCPListener or
// *net.UnixListener, which accepts at once. When the process inherited a
// matching socket, Listen returns it instead of binding a new one:
//
//   - from the old process of an [Manager.Upgrade], when the old process
//     gave Listen the same network and addr (so ":0" keeps its port);
//   - from systemd (LISTEN_FDS, for this process by LISTEN_PID: a socket
//     unit, or the fd store), when its LISTEN_FDNAMES name is the one
//     Listen gives the fd store (network and addr, each ':' made '_'), or
//     when its local address is addr's ("tcp" matches both families,
//     "tcp4" and "tcp6" their own, ":port" a wildcard bind).
//
// The inherited sockets are read once per process, at its first Listen,
// and shared by every Manager; only listening stream sockets are taken
// (other fds are left open and logged); the environment variables that
// named them are unset, and the sockets get close-on-exec. Sockets the
// library took and no Listen claimed are closed by [Manager.Ready].
//
// With $FDSTORE > 0 (systemd 254 and later, FileDescriptorStoreMax= in the
// unit), a socket Listen bound is also pushed to systemd's fd store, so a
// `systemctl restart` keeps it and queues the connections made meanwhile.
// A Unix socket's file survives an upgrade and is removed by a shutdown
// that is not one, unless systemd passed the socket.
func (m *Manager) Listen(network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("shutdown: Listen: network %q is not tcp, tcp4, tcp6 or unix", network)
	}
	inherit(m)
	rec := &listener{network: network, addr: addr}
	l, from, err := claim(network, addr)
	if err != nil {
		return nil, err
	}
	if l != nil {
		rec.origin = from
	} else if l, err = net.Listen(network, addr); err != nil {
		return nil, fmt.Errorf("shutdown: Listen: %w", err)
	} else if err := storeFD(fdName(network, addr), l); err != nil {
		m.log(slog.LevelWarn, "shutdown: systemd fd store refused the socket", slog.String("addr", l.Addr().String()), slog.String("error", err.Error()))
	}
	if ul, ok := l.(interface{ SetUnlinkOnClose(bool) }); ok { // a *net.UnixListener
		// The new process of an upgrade serves on this file: the old one's
		// Close must not unlink it. A final stop removes it (afterStop).
		ul.SetUnlinkOnClose(false)
		rec.path = addr
		if abs, err := filepath.Abs(addr); err == nil && !strings.HasPrefix(addr, "@") {
			rec.path = abs // the file bound, even after a chdir
		}
	}
	rec.l = l
	m.rs.mu.Lock()
	m.rs.listeners = append(m.rs.listeners, rec)
	m.rs.mu.Unlock()
	return l, nil
}

// fdName is the name a socket has in systemd's fd store: its network and
// address, with the ':' that systemd rejects and anything unprintable made
// '_', at most 255 bytes.
func fdName(network, addr string) string {
	b := []byte(network + "-" + addr)
	for i, c := range b {
		if c == ':' || c < ' ' || c > '~' {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), 255)])
}

// Ready says the service is initialised and serving. It closes the
// inherited sockets that no [Manager.Listen] claimed (and asks systemd to
// drop the unclaimed ones it stored), writes the PID file
// ([WithPIDFile]), and then either tells the old process of an upgrade,
// which sends systemd MAINPID= and READY=1 for this one and shuts down, or,
// in a process not started by [Manager.Upgrade], sends systemd READY=1.
// After that, this process rejoins the old process's process group where
// the system allows, so a terminal's Ctrl-C reaches it. It does not change
// [Manager.ReadinessHandler]. It is idempotent: later calls return the
// first one's result. A PID file that cannot be written is in the error,
// and the rest is done all the same. Once shutdown has started (or after
// [Manager.Release]), Ready only closes the unclaimed sockets and returns
// an error: the old process of an upgrade then goes on serving, and its
// Upgrade fails when this process exits.
//
// Call Ready as soon as the servers serve: a new process that crashes
// before Ready loses the connections it had accepted, and the old process
// of an upgrade goes on serving until Ready or [WithUpgradeTimeout].
func (m *Manager) Ready() error {
	m.rs.mu.Lock()
	defer m.rs.mu.Unlock()
	if m.rs.ready {
		return m.rs.readyErr
	}
	m.rs.ready = true
	inherit(m)
	dropUnclaimed(m)
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	if st != idle { // not serving: an old process must not hand over to this one
		abandonReady()
		m.rs.readyErr = errors.New("shutdown: Ready: shutdown started already")
		if st == released {
			m.rs.readyErr = errors.New("shutdown: Ready: the Manager was released")
		}
		return m.rs.readyErr
	}
	var pidErr error
	if p := m.cfg.pidFile; p != "" {
		pidErr = writePIDFile(p) // the service serves all the same: tell the old process
	}
	m.rs.readyErr = errors.Join(pidErr, tellReady(m))
	return m.rs.readyErr
}

// writePIDFile writes the process id to path atomically.
func writePIDFile(path string) error {
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("shutdown: PID file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("shutdown: PID file: %w", err)
	}
	return nil
}

// Upgrade starts the new binary on the same sockets and returns nil once
// it has called [Manager.Ready]; this process then shuts down with the
// cause "shutdown: upgraded to pid N" ([ErrUpgraded]): [Manager.Stopping]
// is closed ([Manager.Handler] adds Connection: close), but
// [Manager.ReadinessHandler] goes on answering 200, since the service is
// still ready, in the new process. Instead of the drain delay, its copies
// of the listeners close at once and its open connections are served for
// a handoff of 1s (at most half the budget); then [Manager.Context] is
// cancelled and the hooks run as usual. A component's error that is
// [net.ErrClosed] (its listener handed over) is a clean stop then, so
// [Manager.Wait] returns nil. No STOPPING=1 goes to systemd.
//
// The binary is os.Args[0] resolved now (in $PATH when it has no slash,
// else relative to the working directory at the start), so a replaced
// binary or a switched symlink is the one started; it gets the same
// arguments and starting directory, this process's environment, stdin,
// stdout and stderr, the sockets from this Manager's Listen that are still
// open, and a pipe to report Ready through. It starts in a process group
// of its own, so that a failure can kill it with its children, and
// rejoins this process's group once Ready (where setpgid allows it: under
// a terminal with job control it stays in its own group until then, and a
// read from the terminal stops it).
//
// If the new binary cannot start, exits or crashes before Ready, or is not
// Ready within [WithUpgradeTimeout] (then killed with its process group),
// Upgrade returns an error that says which, with its exit status, and this
// process goes on serving; a later Upgrade may succeed. One Upgrade runs
// at a time: a call during another returns an error at once, as does a
// call once shutdown has started. A shutdown that starts during an
// Upgrade, or [Manager.Release], kills the new process unless its Ready
// has arrived already. Outside unix, Upgrade returns an error. Every
// result, success or error, is also logged (that is all a signal's sender
// gets).
func (m *Manager) Upgrade() error {
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	switch st {
	case idle:
	case released:
		return m.upgradeRefused("the Manager was released")
	default:
		return m.upgradeRefused("shutdown started already")
	}
	m.rs.mu.Lock()
	if m.rs.upgrading {
		m.rs.mu.Unlock()
		return m.upgradeRefused("another upgrade is running")
	}
	m.rs.upgrading = true
	ls := slices.Clone(m.rs.listeners)
	binary, timeout := m.cfg.binary, m.cfg.upgradeTimeout // tests change them under rs.mu
	m.rs.mu.Unlock()
	defer func() {
		m.rs.mu.Lock()
		m.rs.upgrading = false
		m.rs.mu.Unlock()
	}()
	pid, err := startNew(m, ls, binary, timeout)
	if err != nil {
		m.log(slog.LevelError, "shutdown: upgrade failed", slog.String("error", err.Error()))
		return err
	}
	if err := notifySystemd("MAINPID=" + strconv.Itoa(pid) + "\nREADY=1"); err != nil {
		m.log(slog.LevelWarn, "shutdown: systemd notification failed", slog.String("error", err.Error()))
	}
	m.log(slog.LevelInfo, "shutdown: upgraded", slog.Int("pid", pid))
	m.begin(&upgradedError{pid}, nil, nil)
	return nil
}

// upgradeRefused logs and returns Upgrade's error for a call it refuses
// without starting anything, why saying why.
func (m *Manager) upgradeRefused(why string) error {
	err := errors.New("shutdown: Upgrade: " + why)
	m.log(slog.LevelWarn, "shutdown: upgrade refused", slog.String("error", err.Error()))
	return err
}

// takeOver decides, when the new process's Ready has been read, between
// it and a shutdown that started meanwhile: whichever came first wins.
// It reports whether Ready did; the shutdown that follows, whatever its
// cause, is then an upgrade's. Under m.mu, as begin is, so a sequence
// that begins after it sees the handoff.
func (m *Manager) takeOver() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != idle {
		return false
	}
	m.rs.handoff.Store(true)
	return true
}

// isReleased reports whether m was released.
func isReleased(m *Manager) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state == released
}

// handingOver reports whether the shutdown is an upgrade's: a new process
// took over the sockets.
func (m *Manager) handingOver() bool { return m.rs.handoff.Load() }

// handoff replaces the drain delay in an upgrade's shutdown: the sockets
// close at once (the new process accepts on its copies), and the open
// connections are served, with Connection: close, for handoffTime.
func (m *Manager) handoff() {
	m.rs.mu.Lock()
	ls := m.rs.listeners
	m.rs.mu.Unlock()
	for _, l := range ls {
		l.l.Close()
	}
	d := min(handoffTime, m.cfg.timeout/2)
	m.log(slog.LevelInfo, "shutdown: handoff", slog.Duration("delay", d))
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-m.drainCut:
	}
	t.Stop()
}

// afterStop removes, at the end of a shutdown that is not an upgrade, the
// files of the Unix sockets that systemd did not pass and the PID file if
// it names this process. A new process that stops before its Ready leaves
// the files of the sockets the old process passed: that one still serves.
func (m *Manager) afterStop() {
	if m.handingOver() {
		return
	}
	m.rs.mu.Lock()
	ls := m.rs.listeners
	m.rs.mu.Unlock()
	oldServes := oldServes()
	for _, l := range ls {
		if l.path != "" && !l.systemd && !(l.old && oldServes) && !strings.HasPrefix(l.path, "@") {
			os.Remove(l.path)
		}
	}
	if p := m.cfg.pidFile; p != "" {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
			os.Remove(p)
		}
	}
}

// watchUpgradeSignal calls Upgrade on each WithUpgradeSignal signal until
// shutdown has finished or Release; the signal stays caught after that, so
// a late one does not end the process.
func watchUpgradeSignal(m *Manager) {
	sig := m.cfg.upgradeSignal
	if sig == nil {
		return
	}
	ch := make(chan os.Signal, 1)
	m.cfg.notify(ch, sig)
	go func() {
		for {
			select {
			case <-m.done:
				return
			case <-ch:
			}
			select {
			case <-m.stopping:
				m.log(slog.LevelWarn, "shutdown: upgrade signal during shutdown; ignored", slog.String("signal", signalName(sig)))
				continue
			default:
			}
			m.log(slog.LevelInfo, "shutdown: upgrade signal", slog.String("signal", signalName(sig)))
			m.Upgrade() // it logs its result
		}
	}()
}
