// Command streams serves two kinds of long-lived connection and ends them
// the way a rolling update needs: a WebSocket echo-with-acknowledgement
// service on -addr (GET /ws) and a gRPC server stream on -grpc-addr
// (streams.Counter/Count). After SIGTERM both keep serving through the
// drain delay; when m.Context() is cancelled, once the load balancer sends
// new connections elsewhere, every WebSocket gets close 1001 "going away"
// and a completed close handshake, and every gRPC stream returns
// UNAVAILABLE with a resume token, so clients reconnect to another
// instance and carry on where they were. The e2e tests drive it; see
// docs/streams.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "HTTP (WebSocket) listen address")
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM")
	timeout := flag.Duration("timeout", 25*time.Second, "total shutdown budget, drain delay included")
	drainMin := flag.Duration("drain-min", 0, "with -drain-max: an adaptive drain, at least this long (instead of -drain-delay)")
	drainMax := flag.Duration("drain-max", 0, "with -drain-min: an adaptive drain, at most this long")
	flag.Parse()
	drainOpt := shutdown.WithDrainDelay(*drain)
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["drain-min"] != given["drain-max"] { // one alone would be ignored
		fmt.Fprintln(os.Stderr, "-drain-min and -drain-max go together")
		os.Exit(2)
	}
	if given["drain-min"] { // ends once requests through Handler stop
		drainOpt = shutdown.WithAdaptiveDrain(*drainMin, *drainMax)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	m := shutdown.New(shutdown.WithTimeout(*timeout), drainOpt)

	ws := &wsServer{stop: m.Context()}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", ws)
	srv := &http.Server{Handler: m.Handler(mux), ReadHeaderTimeout: 10 * time.Second}
	gs := grpc.NewServer()
	gs.RegisterService(&counterDesc, &counter{stop: m.Context()})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	gln, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	// The two servers drain together: one waiting for a slow client must
	// not leave the other no time. HTTPServer waits for the WebSockets
	// (hijacked through m.Handler) to finish their close handshakes, and
	// closes those still open at its deadline.
	m.Add("http", shutdown.HTTPServer(srv), shutdown.Concurrent("servers"))
	m.Add("grpc", shutdown.GRPCServer(gs), shutdown.Concurrent("servers"))
	m.Go("grpc", func(context.Context) error { return gs.Serve(gln) })
	m.Go("http", func(context.Context) error { return srv.Serve(ln) })
	slog.Info("listening", "addr", ln.Addr().String(), "grpc", gln.Addr().String())
	err = m.Wait()
	ws.logTotals()
	if err != nil {
		slog.Error("shutdown", "error", err)
		os.Exit(1)
	}
	slog.Info("exiting")
}
