package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// This file drives examples/httpserver through restarts on one host:
// upgrades on SIGHUP (the socket handed over) against the control, a plain
// stop and start on the same port, under the same load.

var (
	upgradedLine = regexp.MustCompile(`msg="shutdown: upgraded" pid=(\d+)`)
	exitingLine  = regexp.MustCompile(`msg=exiting pid=(\d+) code=(\d+)`)
	listenLine   = regexp.MustCompile(`msg=listening addr=(\S+) pid=(\d+)`)
)

// generations is examples/httpserver with every generation it upgraded
// to: they share its stderr, which this reads.
type generations struct {
	cmd      *exec.Cmd
	listens  chan [2]string // addr, pid
	upgrades chan int       // new pids, from the old processes' records
	mu       sync.Mutex
	exits    map[int]int // pid → code
	pids     []int       // every generation that logged it listens
	log      strings.Builder
}

func startGenerations(t *testing.T, args ...string) *generations {
	t.Helper()
	g := &generations{listens: make(chan [2]string, 100), upgrades: make(chan int, 100), exits: map[int]int{}}
	g.cmd = exec.Command(bin, args...)
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.log.WriteString(line + "\n")
			if m := exitingLine.FindStringSubmatch(line); m != nil {
				pid, _ := strconv.Atoi(m[1])
				g.exits[pid], _ = strconv.Atoi(m[2])
			}
			m := listenLine.FindStringSubmatch(line)
			if m != nil {
				pid, _ := strconv.Atoi(m[2])
				g.pids = append(g.pids, pid)
			}
			g.mu.Unlock()
			if m != nil {
				g.listens <- [2]string{m[1], m[2]}
			}
			if m := upgradedLine.FindStringSubmatch(line); m != nil {
				pid, _ := strconv.Atoi(m[1])
				g.upgrades <- pid
			}
		}
	}()
	t.Cleanup(func() {
		// A test that stopped early leaves the newest generations running,
		// and they are not this process's children: kill each by its pid.
		g.mu.Lock()
		for _, pid := range g.pids {
			if running(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		g.mu.Unlock()
		g.cmd.Process.Kill()
		g.cmd.Wait()
		if t.Failed() {
			g.mu.Lock()
			t.Logf("log:\n%s", g.log.String())
			g.mu.Unlock()
		}
	})
	return g
}

// upgraded waits for the next "shutdown: upgraded" record.
func (g *generations) upgraded(t *testing.T) int {
	t.Helper()
	select {
	case pid := <-g.upgrades:
		return pid
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("no upgrade in 30s")
		return 0
	}
}

// exited waits until pid has logged its exit and returns the code.
func (g *generations) exited(t *testing.T, pid int) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		g.mu.Lock()
		code, ok := g.exits[pid]
		g.mu.Unlock()
		if ok && !running(pid) {
			return code
		}
	}
	t.Fatalf("pid %d did not exit in 30s", pid)
	return -1
}

// running reports whether pid is a process that has not exited: a zombie
// (the first process until Wait, a reparented one no init reaps) is not.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// rawClient sends GET / in a loop until stop, on one keep-alive connection
// (a new one after each Connection: close) or on a connection per
// request, with no retries: each request that gets no 200 is a failure.
func rawClient(addr string, keepAlive bool, stop <-chan struct{}, ok, failed *atomic.Int64) {
	var conn net.Conn
	var r *bufio.Reader
	drop := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer drop()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				failed.Add(1)
				time.Sleep(time.Millisecond) // a refused connection returns at once: pace the loop
				continue
			}
			conn, r = c, bufio.NewReader(c)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(r, nil)
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			failed.Add(1)
			drop()
			continue
		}
		resp.Body.Close()
		ok.Add(1)
		if resp.Close || !keepAlive {
			drop()
		}
	}
}

// restartLoad runs n keep-alive and n connection-per-request clients against
// addr until the returned function is called, which returns their counts.
func restartLoad(addr string, n int) func() (okKA, failKA, okPC, failPC int64) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var c [4]atomic.Int64
	for i := range 2 * n {
		ka := i < n
		k := 0
		if !ka {
			k = 2
		}
		wg.Go(func() { rawClient(addr, ka, stop, &c[k], &c[k+1]) })
	}
	return func() (int64, int64, int64, int64) {
		close(stop)
		wg.Wait()
		return c[0].Load(), c[1].Load(), c[2].Load(), c[3].Load()
	}
}

// fdCount counts pid's open fds, leaving out the TCP connections that
// come and go with the load: pipes, files and listening sockets count.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" { // LISTEN
				listening["socket:["+fs[9]+"]"] = true
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && (!strings.HasPrefix(target, "socket:") || listening[target]) {
			n++
		}
	}
	return n
}

// 20 upgrades in a row, about a second apart, each new process upgraded
// as soon as it is Ready while the one before still shuts down, under
// keep-alive and connection-per-request load: no request fails, each old
// process exits 0, the newest process's fds stay flat, and one process is
// left at the end.
func TestUpgradeUnderLoadLosesNoRequest(t *testing.T) {
	const upgrades = 20
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	g := startGenerations(t, "-addr", "127.0.0.1:0", "-timeout", "10s", "-upgrade-timeout", "20s", "-pidfile", pidFile)
	var addr string
	select {
	case first := <-g.listens:
		addr = first[0]
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("the first process did not listen in 30s")
	}
	pid := g.cmd.Process.Pid
	finish := restartLoad(addr, 4)
	pids := []int{pid}
	var fds []int
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range upgrades {
		<-tick.C // the scenario's pace, not a synchronisation
		syscall.Kill(pid, syscall.SIGHUP)
		next := g.upgraded(t)
		if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(next) {
			t.Errorf("PID file = %q, %v; want %d", b, err, next)
		}
		fds = append(fds, fdCount(t, next))
		pids = append(pids, next)
		pid = next
	}
	okKA, failKA, okPC, failPC := finish()
	for _, p := range pids[:upgrades] {
		if code := g.exited(t, p); code != 0 {
			t.Errorf("old pid %d exited %d, want 0", p, code)
		}
	}
	alive := 0
	for _, p := range pids {
		if running(p) {
			alive++
		}
	}
	seen := map[int]bool{}
	for _, p := range pids {
		seen[p] = true
	}
	t.Logf("upgrades %d, distinct pids %d, requests keep-alive %d (failed %d), per-connection %d (failed %d), fds of the newest process first/last %d/%d, processes left %d",
		upgrades, len(seen), okKA+failKA, failKA, okPC+failPC, failPC, fds[0], fds[len(fds)-1], alive)
	if len(seen) != upgrades+1 || failKA != 0 || failPC != 0 || fds[0] != fds[len(fds)-1] || alive != 1 {
		t.Errorf("want %d distinct pids, 0 failed, flat fds, 1 process left", upgrades+1)
	}
	if okKA == 0 || okPC == 0 {
		t.Error("no load reached the service")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if code := g.exited(t, pid); code != 0 {
		t.Errorf("last pid %d exited %d, want 0", pid, code)
	}
	if err := g.cmd.Wait(); err != nil { // its stderr closes: read no more
		t.Errorf("first process: %v, want exit 0", err)
	}
}

// The control: stop and start on the same port, the way a restart goes
// without a handover, under the same load, fails requests.
func TestStopAndStartFailsRequests(t *testing.T) {
	const restarts = 3
	in := start(t, "first", 0, 10*time.Second)
	addr := in.addr
	finish := restartLoad(addr, 4)
	for i := range restarts {
		time.Sleep(time.Second) // the scenario's pace, as above
		in.sigterm()
		in.wait(time.Now().Add(30 * time.Second))
		in = startProgram(t, fmt.Sprintf("restart %d", i+1), bin, "-addr", addr, "-drain-delay", "0s", "-timeout", "10s")
	}
	time.Sleep(time.Second)
	okKA, failKA, okPC, failPC := finish()
	t.Logf("stop and start %d times: requests keep-alive %d (failed %d), per-connection %d (failed %d)",
		restarts, okKA+failKA, failKA, okPC+failPC, failPC)
	if failKA+failPC == 0 {
		t.Error("no request failed in a plain stop and start: the control shows nothing")
	}
}
