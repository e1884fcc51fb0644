// Command grpc serves gRPC's standard health service and a server stream
// (ticks.Ticker/Tick) and drains them with shutdown: at SIGTERM the health
// status turns NOT_SERVING (the gRPC twin of a failing readiness probe)
// and the server keeps serving through the drain delay; at its end every
// stream, health Watch included, ends with UNAVAILABLE, so clients
// reconnect elsewhere, and GracefulStop returns at once. Stop cuts what is
// left at the deadline.
//
// Try it with grpcurl -plaintext 127.0.0.1:9090 grpc.health.v1.Health/Watch
// in one terminal and kill -TERM in another.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/gracefulgo/shutdown/shutdowngrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM, with health NOT_SERVING")
	drainMin := flag.Duration("drain-min", 0, "with -drain-max: an adaptive drain, at least this long (instead of -drain-delay)")
	drainMax := flag.Duration("drain-max", 0, "with -drain-min: an adaptive drain, at most this long; gRPC is no evidence, so it drains this long")
	flag.Parse()
	drainOpt := shutdown.WithDrainDelay(*drain)
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["drain-min"] != given["drain-max"] { // one alone would be ignored
		fmt.Fprintln(os.Stderr, "-drain-min and -drain-max go together")
		os.Exit(2)
	}
	if given["drain-min"] { // gRPC is no evidence: it drains -drain-max
		drainOpt = shutdown.WithAdaptiveDrain(*drainMin, *drainMax)
	}
	m := shutdown.New(drainOpt)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	s := newServer(m)
	slog.Info("listening", "addr", ln.Addr().String())
	if err := m.Run(func(context.Context) error { return s.Serve(ln) }); err != nil {
		slog.Error("shutdown", "error", err)
		os.Exit(1)
	}
}

// newServer returns the service's gRPC server, drained by m: its streams
// end when m.Context() is cancelled, its health turns NOT_SERVING when
// shutdown starts, and m's "grpc" hook stops it.
func newServer(m *shutdown.Manager) *grpc.Server {
	s := grpc.NewServer(grpc.StreamInterceptor(shutdowngrpc.StreamServerInterceptor(m)))
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(s, hs)
	shutdowngrpc.Health(m, hs)
	s.RegisterService(&tickerDesc, nil)
	reflection.Register(s) // for grpcurl
	m.Add("grpc", shutdown.GRPCServer(s))
	return s
}
