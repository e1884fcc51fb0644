package shutdown

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// panickyGRPC is a gRPC server whose GracefulStop panics, as a wrapper's
// bug would.
type panickyGRPC struct{}

func (panickyGRPC) GracefulStop() { panic("graceful stop: boom") }
func (panickyGRPC) Stop()         {}

// wantAdapterPanic checks that Wait reported hook name's panic, with the
// stack where it happened (it names where), and that the hook registered
// before it still ran.
func wantAdapterPanic(t *testing.T, err error, name, value, where string, otherRan bool) {
	t.Helper()
	var he *HookError
	if !errors.As(err, &he) || he.Name != name || !errors.Is(err, ErrPanic) || !strings.Contains(he.Err.Error(), value) {
		t.Fatalf("Wait() = %v, want ErrPanic from hook %q with %q", err, name, value)
	}
	if !strings.Contains(string(he.Stack), where) {
		t.Errorf("the panic's stack does not name %s:\n%s", where, he.Stack)
	}
	if !otherRan {
		t.Error("the hook after the panicking one did not run")
	}
}

// TestGRPCServerGracefulStopPanicIsReported checks that a GracefulStop
// that panics, on the goroutine GRPCServer runs it on, is the hook's
// ErrPanic with GracefulStop's stack, and that the next hook still runs:
// the process does not crash.
func TestGRPCServerGracefulStopPanicIsReported(t *testing.T) {
	m := newTest()
	dbClosed := false
	m.Add("db", func(context.Context) error { dbClosed = true; return nil })
	m.Add("grpc", GRPCServer(panickyGRPC{}))
	m.Trigger()
	wantAdapterPanic(t, m.Wait(), "grpc", "graceful stop: boom", "panickyGRPC.GracefulStop", dbClosed)
}

// panickyListener hands out connections whose Close panics, after
// closing, when it is called while a Read waits: when Shutdown closes the
// connection idle between requests, as a buggy wrapper (metrics, PROXY
// protocol) might.
type panickyListener struct {
	net.Listener
	accepted chan *panickyConn
}

func (l panickyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc := &panickyConn{Conn: c}
	l.accepted <- pc
	return pc, nil
}

type panickyConn struct {
	net.Conn
	reading atomic.Int32
	once    sync.Once
}

func (c *panickyConn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	return c.Conn.Read(p)
}

func (c *panickyConn) Close() error {
	waiting := c.reading.Load() > 0
	err := c.Conn.Close()
	if waiting {
		c.once.Do(func() { panic("conn close: boom") })
	}
	return err
}

// TestHTTPServerShutdownPanicIsReported checks that a panic inside
// http.Server.Shutdown, which HTTPServer runs on a goroutine of its own
// (here: Shutdown closing an idle keep-alive connection whose Close
// panics), is the hook's ErrPanic with the stack of that Close, and that
// the next hook still runs: the process does not crash.
func TestHTTPServerShutdownPanicIsReported(t *testing.T) {
	m := newTest()
	dbClosed := false
	m.Add("db", func(context.Context) error { dbClosed = true; return nil })
	idle := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})),
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateIdle {
				idle <- struct{}{}
			}
		},
	}
	m.Add("http", HTTPServer(srv))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := panickyListener{ln, make(chan *panickyConn, 1)}
	serveOn(t, srv, pl)
	get(t, client(t), "http://"+ln.Addr().String())
	// Wait for the server to read for the next request, once idle: before
	// that, its own goroutine would close the connection once Shutdown has
	// begun, and the panic would be net/http's, out of reach.
	c := <-pl.accepted
	<-idle
	for deadline := time.Now().Add(30 * time.Second); c.reading.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // hang guard
			t.Fatal("the server did not read for a next request")
		}
	}
	m.Trigger()
	wantAdapterPanic(t, m.Wait(), "http", "conn close: boom", "panickyConn).Close", dbClosed)
}

// TestHookCalledOutsideManagerCrashesNamingPanic checks an adapter's hook
// called directly, outside a Manager (in a test, or under another
// supervisor): a panic in GracefulStop, raised again on the caller's
// goroutine, still crashes the process naming the panic's value and where
// it happened, as it would have without the relay. It runs the hook in a
// child process (this test binary again) and reads its crash.
func TestHookCalledOutsideManagerCrashesNamingPanic(t *testing.T) {
	const env = "SHUTDOWN_TEST_DIRECT_HOOK"
	if os.Getenv(env) != "" {
		GRPCServer(panickyGRPC{})(context.Background())
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHookCalledOutsideManagerCrashesNamingPanic$")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the child did not crash:\n%s", out)
	}
	for _, want := range []string{"graceful stop: boom", "panickyGRPC.GracefulStop"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the crash does not name %q:\n%s", want, out)
		}
	}
}
