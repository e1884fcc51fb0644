package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" { // a child of TestSIGTERM...: the example itself
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// fixture is a real grpc-go server with the health service on loopback, a
// client connected to it, and a Watch stream (a server stream that never
// ends by itself) in flight.
type fixture struct {
	srv    *grpc.Server
	hs     *health.Server
	conn   *grpc.ClientConn
	stream grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
	cancel context.CancelFunc // ends the stream from the client's side
	served chan error         // Serve's result
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: grpc.NewServer(), hs: health.NewServer(), served: make(chan error, 1)}
	healthpb.RegisterHealthServer(f.srv, f.hs)
	go func() { f.served <- f.srv.Serve(ln) }()
	f.conn, err = grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.conn.Close()
		f.srv.Stop()
	})
	var ctx context.Context
	ctx, f.cancel = context.WithCancel(context.Background())
	t.Cleanup(f.cancel)
	f.stream, err = healthpb.NewHealthClient(f.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, f.stream, healthpb.HealthCheckResponse_SERVING)
	return f
}

// expect receives the next status on a Watch stream.
func expect(t *testing.T, watch grpc.ServerStreamingClient[healthpb.HealthCheckResponse], want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	got, err := watch.Recv()
	if err != nil || got.Status != want {
		t.Fatalf("Watch: Recv() = %v, %v; want %v", got, err, want)
	}
}

var quiet = shutdown.WithLogger(slog.New(slog.DiscardHandler))

// TestGracefulStopWaitsForStream checks the graceful path: once the hook
// runs, the client is told to go away, the stream in flight still
// carries messages, and the hook returns when the client ends the stream.
func TestGracefulStopWaitsForStream(t *testing.T) {
	f := newFixture(t)
	m := shutdown.New(shutdown.WithSignals(), quiet, shutdown.WithTimeout(30*time.Second))
	hookStarted := make(chan struct{})
	drain := shutdown.GRPCServer(f.srv)
	m.Add("grpc", func(ctx context.Context) error {
		close(hookStarted)
		return drain(ctx)
	})
	go func() {
		<-m.Stopping()
		f.hs.Shutdown()
	}()
	m.Trigger()
	expect(t, f.stream, healthpb.HealthCheckResponse_NOT_SERVING)
	<-hookStarted

	// GracefulStop sends GOAWAY: the channel leaves READY, the stream stays.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // hang guard
	defer cancel()
	for s := f.conn.GetState(); s == connectivity.Ready; s = f.conn.GetState() {
		if !f.conn.WaitForStateChange(ctx, s) {
			t.Fatal("client channel still READY 20s after GracefulStop started")
		}
	}
	f.hs.Resume()
	expect(t, f.stream, healthpb.HealthCheckResponse_SERVING)
	select {
	case <-m.Done():
		t.Fatal("shutdown finished with a stream in flight")
	default:
	}

	f.cancel()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if err := <-f.served; err != nil {
		t.Errorf("Serve() = %v, want nil after GracefulStop", err)
	}
}

// TestStopAtDeadline checks the forceful path: a stream that never ends
// holds GracefulStop until the hook's deadline; Stop then cuts it, and the
// hook reports ErrTimeout.
func TestStopAtDeadline(t *testing.T) {
	f := newFixture(t)
	m := shutdown.New(shutdown.WithSignals(), quiet)
	m.Add("grpc", shutdown.GRPCServer(f.srv), shutdown.Timeout(500*time.Millisecond))
	start := time.Now()
	m.Trigger()
	err := m.Wait()
	if !errors.Is(err, shutdown.ErrTimeout) {
		t.Errorf("Wait() = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 10*time.Second { // hang guard
		t.Errorf("Wait() took %v with a 500ms hook timeout", d)
	}
	guard := time.AfterFunc(10*time.Second, f.cancel) // hang guard: Canceled fails below
	defer guard.Stop()
	_, err = f.stream.Recv()
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("Watch after Stop: Recv() = %v, want Unavailable", err)
	}
}
