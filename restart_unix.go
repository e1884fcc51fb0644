//go:build unix

package shutdown

// This file passes sockets between processes: what a process inherits
// (from the old process of an upgrade, or from systemd), and the fd
// store. upgrade_unix.go starts the new process.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// upgradeEnv names the variable through which the old process of an
// upgrade describes what it passed: a JSON upgradeState.
const upgradeEnv = "GRACEFULGO_SHUTDOWN_UPGRADE"

// upgradeState is what the old process passes in upgradeEnv.
type upgradeState struct {
	Ready     int          `json:"ready"` // the pipe's fd on which to report Ready
	PGID      int          `json:"pgid"`  // the old process's group, to rejoin
	Listeners []passedSock `json:"listeners"`
}

// passedSock is one socket passed, as the old process's Listen had it.
type passedSock struct {
	Network string `json:"network"`
	Addr    string `json:"addr"`
	FD      int    `json:"fd"`
	Systemd bool   `json:"systemd,omitempty"`
}

// inheritedSock is a listening socket the process inherited.
type inheritedSock struct {
	file    *os.File
	fd      int
	network string // from an upgrade: as the old process's Listen had it
	addr    string
	name    string // from systemd: its LISTEN_FDNAMES name
	systemd bool
	claimed bool
}

// inherited is what this process inherited: read once, at the first
// Listen or Ready of any Manager.
var inherited struct {
	once  sync.Once
	mu    sync.Mutex
	socks []*inheritedSock
	ready *os.File // the pipe to the old process; nil when not upgraded
	pgid  int
	// oldServes: this is the new process of an upgrade, and the old one
	// has not been told it is Ready, so it still serves.
	oldServes bool
	done      bool // Ready closed the unclaimed sockets
}

// inherit reads the inherited sockets once per process; m logs what it
// leaves alone.
func inherit(m *Manager) {
	inherited.once.Do(func() {
		if v, ok := os.LookupEnv(upgradeEnv); ok {
			os.Unsetenv(upgradeEnv)
			if err := inheritUpgrade(v); err != nil {
				m.log(slog.LevelError, "shutdown: inheriting from the old process failed", slog.String("error", err.Error()))
			}
		}
		if skipped := inheritSystemd(); len(skipped) > 0 {
			m.log(slog.LevelWarn, "shutdown: systemd passed fds that are not listening stream sockets; left open", slog.String("fds", strings.Join(skipped, ",")))
		}
	})
}

func inheritUpgrade(v string) error {
	var st upgradeState
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return fmt.Errorf("shutdown: %s: %w", upgradeEnv, err)
	}
	syscall.CloseOnExec(st.Ready)
	inherited.ready = os.NewFile(uintptr(st.Ready), "upgrade-ready")
	inherited.pgid = st.PGID
	inherited.oldServes = true
	for _, s := range st.Listeners {
		syscall.CloseOnExec(s.FD)
		inherited.socks = append(inherited.socks, &inheritedSock{
			file: os.NewFile(uintptr(s.FD), s.Network+":"+s.Addr), fd: s.FD, network: s.Network, addr: s.Addr, systemd: s.Systemd})
	}
	return nil
}

// inheritSystemd takes the listening stream sockets systemd passed
// (sd_listen_fds(3)) and returns the names of the fds it left alone.
func inheritSystemd() (skipped []string) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"} {
		os.Unsetenv(k)
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n <= 0 || pid != strconv.Itoa(os.Getpid()) {
		return nil
	}
	for i := range n {
		fd := 3 + i
		name := "fd" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		if !listeningStream(fd) {
			skipped = append(skipped, name)
			continue
		}
		syscall.CloseOnExec(fd)
		inherited.socks = append(inherited.socks, &inheritedSock{file: os.NewFile(uintptr(fd), name), fd: fd, name: name, systemd: true})
	}
	return skipped
}

// listeningStream reports whether fd is a stream socket that listens.
func listeningStream(fd int) bool {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return false
	}
	acc, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	return err == nil && acc != 0
}

// claim returns the inherited socket that matches network and addr, if
// any, and who passed it.
func claim(network, addr string) (net.Listener, origin, error) {
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	for _, s := range inherited.socks {
		if s.claimed || s.file == nil || !s.matches(network, addr) {
			continue
		}
		l, err := net.FileListener(s.file)
		if err != nil {
			return nil, origin{}, fmt.Errorf("shutdown: Listen: inherited %s: %w", s.file.Name(), err)
		}
		s.file.Close() // FileListener holds a copy
		s.claimed = true
		return l, origin{systemd: s.systemd, old: s.network != ""}, nil
	}
	return nil, origin{}, nil
}

// oldServes reports whether this is the new process of an upgrade that
// has not told the old one it is Ready: the old one still serves.
func oldServes() bool {
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	return inherited.oldServes
}

// abandonReady closes, in the new process of an upgrade that will never
// be Ready, the pipe to the old process, which goes on serving.
func abandonReady() {
	inherited.mu.Lock()
	f := inherited.ready
	inherited.ready = nil
	inherited.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

// matches reports whether Listen(network, addr) is this socket: by the
// string the old process gave Listen, by the fd store's name, or by its
// local address.
func (s *inheritedSock) matches(network, addr string) bool {
	if s.network != "" {
		return s.network == network && s.addr == addr
	}
	if s.name == fdName(network, addr) {
		return true
	}
	// Not s.file.Fd(), which would switch the socket to blocking mode.
	sa, err := syscall.Getsockname(s.fd)
	if err != nil {
		return false
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrUnix:
		return network == "unix" && sa.Name == addr
	case *syscall.SockaddrInet4:
		return network != "unix" && network != "tcp6" && sameTCP(addr, network, sa.Addr[:], sa.Port)
	case *syscall.SockaddrInet6:
		return network != "unix" && network != "tcp4" && sameTCP(addr, network, sa.Addr[:], sa.Port)
	}
	return false
}

// sameTCP reports whether addr names the local address ip:port; a host
// left out (":8080") names the wildcard address.
func sameTCP(addr, network string, ip []byte, port int) bool {
	want, err := net.ResolveTCPAddr(network, addr)
	if err != nil || want.Port != port || want.Port == 0 {
		return false
	}
	got := net.IP(ip)
	if want.IP == nil || want.IP.IsUnspecified() {
		return got.IsUnspecified()
	}
	return want.IP.Equal(got)
}

// dropUnclaimed closes, once per process, the sockets that no Listen
// claimed, and asks systemd to drop the stored ones.
func dropUnclaimed(m *Manager) {
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	if inherited.done {
		return
	}
	inherited.done = true
	for _, s := range inherited.socks {
		if s.claimed {
			continue
		}
		s.file.Close()
		s.claimed = true
		if s.systemd && s.name != "" && fdStore() { // an upgrade passes no name
			if err := notifySystemd("FDSTOREREMOVE=1\nFDNAME=" + s.name); err != nil {
				m.log(slog.LevelWarn, "shutdown: systemd notification failed", slog.String("error", err.Error()))
			}
		}
		m.log(slog.LevelInfo, "shutdown: inherited socket not claimed by Listen; closed", slog.String("socket", s.file.Name()))
	}
}

// tellReady tells the old process of an upgrade that this one is Ready and
// rejoins its process group; without one, it tells systemd.
func tellReady(m *Manager) error {
	inherited.mu.Lock()
	f, pgid := inherited.ready, inherited.pgid
	inherited.ready = nil
	if f != nil {
		inherited.oldServes = false // told below, or tried
	}
	inherited.mu.Unlock()
	if f == nil {
		return notifySystemd("READY=1")
	}
	_, err := fmt.Fprintf(f, "ready %d\n", os.Getpid())
	f.Close()
	if err != nil {
		return fmt.Errorf("shutdown: Ready: telling the old process: %w", err)
	}
	if pgid > 0 {
		if err := syscall.Setpgid(0, pgid); err != nil {
			m.log(slog.LevelDebug, "shutdown: could not rejoin the old process's group", slog.Int("pgid", pgid), slog.String("error", err.Error()))
		}
	}
	return nil
}

// fdStore reports whether systemd keeps fds for this service ($FDSTORE,
// systemd 254 and later).
func fdStore() bool {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return err == nil && n > 0 && os.Getenv("NOTIFY_SOCKET") != ""
}

// storeFD pushes l to systemd's fd store under name, when there is one.
func storeFD(name string, l net.Listener) error {
	if !fdStore() {
		return nil
	}
	var err error
	cerr := control(l, func(fd int) {
		err = notifySystemdFDs("FDSTORE=1\nFDNAME="+name, fd)
	})
	return errors.Join(cerr, err)
}

// control runs f with l's fd.
func control(l net.Listener, f func(fd int)) error {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return fmt.Errorf("shutdown: %T has no fd", l)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// notifySystemdFDs is notifySystemd with fds attached (SCM_RIGHTS). A
// connected unixgram conn cannot carry them (net says "use of WriteTo
// with pre-connected connection"), so it sends on a socket of its own,
// without waiting for a full queue.
func notifySystemdFDs(state string, fds ...int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	syscall.ForkLock.RLock()
	s, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err == nil {
		syscall.CloseOnExec(s)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	defer syscall.Close(s)
	if err := syscall.Sendmsg(s, []byte(state), syscall.UnixRights(fds...), &syscall.SockaddrUnix{Name: path}, syscall.MSG_DONTWAIT); err != nil {
		return fmt.Errorf("shutdown: systemd notify: %w", err)
	}
	return nil
}
