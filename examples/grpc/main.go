// Command grpc serves gRPC's standard health service and drains it with
// shutdown: at SIGTERM the health status turns NOT_SERVING (the gRPC
// twin of a failing readiness probe), the server keeps serving through the
// drain delay, then GracefulStop waits for the calls in flight, and Stop
// cuts them at the deadline.
//
// Try it with grpcurl -plaintext 127.0.0.1:9090 grpc.health.v1.Health/Watch
// in one terminal and kill -TERM in another.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM, with health NOT_SERVING")
	flag.Parse()
	m := shutdown.New(shutdown.WithDrainDelay(*drain))

	s := grpc.NewServer()
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(s, hs)
	go func() {
		<-m.Stopping()
		hs.Shutdown() // every service NOT_SERVING; Watch streams are told
	}()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	m.Add("grpc", shutdown.GRPCServer(s))
	slog.Info("listening", "addr", ln.Addr().String())
	if err := m.Run(func(context.Context) error { return s.Serve(ln) }); err != nil {
		slog.Error("shutdown", "error", err)
		os.Exit(1)
	}
}
