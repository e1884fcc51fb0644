package shutdowngrpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/gracefulgo/shutdown/shutdowngrpc"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// watch opens a health Watch for service and checks its first status.
func watch(t *testing.T, conn *grpc.ClientConn, service string, want healthpb.HealthCheckResponse_ServingStatus) grpc.ServerStreamingClient[healthpb.HealthCheckResponse] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang guard
	t.Cleanup(cancel)
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w, want)
	return w
}

// expect receives the next status on a Watch stream.
func expect(t *testing.T, w grpc.ServerStreamingClient[healthpb.HealthCheckResponse], want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	got, err := w.Recv()
	if err != nil || got.Status != want {
		t.Fatalf("Watch: Recv() = %v, %v; want %v", got, err, want)
	}
}

// check asks hs for service's status in-process.
func check(t *testing.T, hs *health.Server, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	res, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

// TestHealthNotServingFromStoppingThroughTheDrain checks the whole path a
// client-side health check sees: Watch clients of every service ("" too)
// hear NOT_SERVING when shutdown starts, while the drain delay still runs
// (m.Context() not done); a later SetServingStatus does not undo it; and
// at the drain's end the interceptor ends both Watch streams with
// Unavailable, grpc's health server's Canceled replaced.
func TestHealthNotServingFromStoppingThroughTheDrain(t *testing.T) {
	t.Parallel()
	m := newManager(t, shutdown.WithDrainDelay(time.Second))
	hs := health.NewServer()
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	shutdowngrpc.Health(m, hs)
	conn := serve(t, m, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	all := watch(t, conn, "", healthpb.HealthCheckResponse_SERVING)
	orders := watch(t, conn, "orders", healthpb.HealthCheckResponse_SERVING)

	m.Trigger()
	expect(t, all, healthpb.HealthCheckResponse_NOT_SERVING)
	expect(t, orders, healthpb.HealthCheckResponse_NOT_SERVING)
	if err := m.Context().Err(); err != nil {
		t.Errorf("NOT_SERVING arrived after the drain (Context().Err() = %v), want during it", err)
	}
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	if got := check(t, hs, "orders"); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check(orders) after SetServingStatus(SERVING) = %v, want NOT_SERVING from Stopping on", got)
	}

	for name, w := range map[string]grpc.ServerStreamingClient[healthpb.HealthCheckResponse]{"": all, "orders": orders} {
		if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("Watch(%q) at the drain's end: Recv() = %v, want Unavailable", name, err)
		}
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

// TestHealthCalledAfterShutdownStartedTurnsNotServing checks that Health
// given a Manager already stopping sets hs NOT_SERVING all the same.
func TestHealthCalledAfterShutdownStartedTurnsNotServing(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	hs := health.NewServer()
	shutdowngrpc.Health(m, hs)
	deadline := time.Now().Add(30 * time.Second) // hang guard
	for check(t, hs, "") != healthpb.HealthCheckResponse_NOT_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("Check() still SERVING 30s after Health on a finished shutdown")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// TestHealthUnchangedAfterRelease checks that a Manager released before
// any shutdown ends Health's goroutine (its Done is closed, its Stopping
// never is) and leaves hs SERVING. Not parallel: it counts goroutines.
func TestHealthUnchangedAfterRelease(t *testing.T) {
	before := goleak.IgnoreCurrent()
	m := shutdown.New(shutdown.WithSignals(), quiet)
	hs := health.NewServer()
	shutdowngrpc.Health(m, hs)
	m.Release()
	goleak.VerifyNone(t, before) // waits for Health's goroutine to end
	if got := check(t, hs, ""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check() after Release = %v, want SERVING", got)
	}
}
