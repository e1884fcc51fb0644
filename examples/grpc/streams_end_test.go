package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// childEnv makes the test binary run main, for the real-signal test.
const childEnv = "EXAMPLE_GRPC_CHILD"

// The child's log lines (slog's default handler) that give its address
// and its shutdown's time.
var (
	listening    = regexp.MustCompile(`INFO listening addr=(\S+)`)
	finishedLine = regexp.MustCompile(`shutdown: finished elapsed=\S+`)
)

// streams is a real grpc-go client of the example with two streams open
// that never end by themselves: a health Watch (as grpc-go's client-side
// health checking and Envoy keep) and a Tick server stream.
type streams struct {
	watch grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
	ticks grpc.ClientStream
}

func openStreams(t *testing.T, addr string) *streams {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang guard
	t.Cleanup(cancel)
	var c streams
	if c.watch, err = healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	expect(t, c.watch, healthpb.HealthCheckResponse_SERVING)
	if c.ticks, err = conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, TickMethod); err == nil {
		err = c.ticks.SendMsg(&emptypb.Empty{})
	}
	if err == nil {
		err = c.ticks.CloseSend()
	}
	if err == nil {
		err = c.ticks.RecvMsg(new(wrapperspb.UInt64Value))
	}
	if err != nil {
		t.Fatalf("Tick: %v", err)
	}
	return &c
}

// endThroughTheDrain checks what the clients see once shutdown has
// started: the Watch hears NOT_SERVING, the Tick stream still carries a
// message after that (the drain: the server still serves), then both end
// with Unavailable, the status clients retry elsewhere. duringDrain runs
// once NOT_SERVING has arrived.
func (c *streams) endThroughTheDrain(t *testing.T, duringDrain func()) {
	t.Helper()
	expect(t, c.watch, healthpb.HealthCheckResponse_NOT_SERVING)
	duringDrain()
	if err := c.ticks.RecvMsg(new(wrapperspb.UInt64Value)); err != nil {
		t.Errorf("Tick after NOT_SERVING: %v, want a tick: the server serves through the drain", err)
	}
	var err error
	for err == nil {
		err = c.ticks.RecvMsg(new(wrapperspb.UInt64Value))
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Tick stream ended with %v, want Unavailable", err)
	}
	if _, err := c.watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch ended with %v, want Unavailable", err)
	}
}

// TestTriggerEndsStreamsRightAfterDrain runs the example's server in
// process with a health Watch and a Tick stream open. Before shutdowngrpc,
// the Watch held GracefulStop until the budget ran out and Wait returned
// ErrTimeout (issue 16: exit 1 after 24.95 s). Now: NOT_SERVING during
// the drain, both streams end with Unavailable when Context() is
// cancelled, and Wait returns nil within milliseconds of the drain's end.
func TestTriggerEndsStreamsRightAfterDrain(t *testing.T) {
	const drain = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := shutdown.New(shutdown.WithSignals(), quiet, shutdown.WithDrainDelay(drain), shutdown.WithTimeout(10*time.Second))
	s := newServer(m)
	m.Go("grpc", func(context.Context) error { return s.Serve(ln) })
	c := openStreams(t, ln.Addr().String())

	m.Trigger()
	c.endThroughTheDrain(t, func() {
		if err := m.Context().Err(); err != nil {
			t.Errorf("NOT_SERVING arrived after the drain (Context().Err() = %v), want during it", err)
		}
	})
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	rep := m.Report()
	after := rep.Elapsed - rep.Drain
	t.Logf("Wait returned %v after Trigger: drain %v, then %v", rep.Elapsed, rep.Drain, after)
	// The design says about 100 ms; the bound is loose for a loaded
	// machine, and still far from the budget the streams used to take.
	if after > 2*time.Second {
		t.Errorf("Wait returned %v after the drain, want well under 2s", after)
	}
}

// TestSIGTERMExitsZeroRightAfterDrain runs the example as a child process
// (this test binary, re-executed into main) and sends it a real SIGTERM
// with a health Watch and a Tick stream open: the streams end as in
// TestTriggerEndsStreamsRightAfterDrain and the process exits 0 within
// the drain delay plus a little.
func TestSIGTERMExitsZeroRightAfterDrain(t *testing.T) {
	const drain = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-addr", "127.0.0.1:0", "-drain-delay", drain.String())
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // a no-op once it has exited

	addr := make(chan string, 1)
	logged := make(chan string, 1) // all of the child's log, once it closes stderr
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		logged <- all.String()
	}()
	var c *streams
	select {
	case a := <-addr:
		c = openStreams(t, a)
	case <-ctx.Done():
		t.Fatal("the child never logged its address")
	}

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.endThroughTheDrain(t, func() {})
	log := <-logged
	err = cmd.Wait()
	exited := time.Since(sent)
	if err != nil {
		t.Errorf("child: %v, want exit 0; its log:\n%s", err, log)
	}
	finished := finishedLine.FindString(log)
	t.Logf("exit %v after SIGTERM (drain %v); the child logged %q", exited, drain, finished)
	if exited > drain+5*time.Second {
		t.Errorf("exit %v after SIGTERM, want within the %v drain and well under 5s more", exited, drain)
	}
}
