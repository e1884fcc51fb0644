package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"context"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// An HTTP server (net/http) and a gRPC server (grpc-go) run as components
// of one Manager, and the gRPC server fails at startup: its port is taken.
// Its failure stops the service: the HTTP server, still serving, is
// drained by its hook (the request in flight gets its whole response),
// after the drain delay when there is one, and Wait returns the gRPC
// error. Before components, this service hung: the HTTP server waited for a
// hook that only ran once the function wrapping both servers returned.
func TestGRPCFailingAtStartupStopsHTTPComponent(t *testing.T) {
	for _, drain := range []time.Duration{0, 500 * time.Millisecond} {
		t.Run(fmt.Sprint("drain=", drain), func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			httpLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + httpLn.Addr().String()
			m := shutdown.New(shutdown.WithSignals(), shutdown.WithDrainDelay(drain),
				shutdown.WithTimeout(10*time.Second), shutdown.WithLogger(slog.New(slog.DiscardHandler)))

			inHandler, release := make(chan struct{}), make(chan struct{})
			mux := http.NewServeMux()
			mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
				close(inHandler)
				<-release
				io.WriteString(w, "done")
			})
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			srv := &http.Server{Handler: m.Handler(mux)}
			m.Add("http", shutdown.HTTPServer(srv))
			m.Go("http", func(context.Context) error { return srv.Serve(httpLn) })

			slow := make(chan string, 1)
			go func() {
				resp, err := http.Get(base + "/slow")
				if err != nil {
					slow <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				slow <- fmt.Sprintf("%d %s", resp.StatusCode, b)
			}()
			<-inHandler

			gs := grpc.NewServer()
			healthpb.RegisterHealthServer(gs, health.NewServer())
			m.Add("grpc", shutdown.GRPCServer(gs))
			m.Go("grpc", func(context.Context) error {
				ln, err := net.Listen("tcp", taken.Addr().String())
				if err != nil {
					return err
				}
				return gs.Serve(ln)
			})

			<-m.Stopping()
			if drain > 0 {
				// The HTTP component still serves through the drain delay,
				// and tells the client to reconnect elsewhere.
				resp, err := http.Get(base + "/")
				if err != nil {
					t.Fatalf("GET during the drain: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 || !resp.Close {
					t.Errorf("GET during the drain: %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
				}
			}
			close(release)
			err = m.Wait()

			var he *shutdown.HookError
			if !errors.As(err, &he) || he.Name != "grpc" || !errors.Is(err, syscall.EADDRINUSE) ||
				!strings.HasPrefix(err.Error(), `shutdown: component "grpc": listen tcp `) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Wait() = %v, want the gRPC component's bind error alone", err)
			}
			if got := <-slow; got != "200 done" {
				t.Errorf("request in flight got %q, want 200 done: drained by the HTTP hook", got)
			}
			rep := m.Report()
			var hook time.Duration
			for _, h := range rep.Hooks {
				if h.Name == "http" && !h.Component {
					hook = h.Elapsed
				}
			}
			if (rep.Drain > 0) != (drain > 0) || rep.Drain < drain {
				t.Errorf("Report().Drain = %v, want the %v drain (the HTTP component still served)", rep.Drain, drain)
			}
			overhead := rep.Elapsed - rep.Drain - hook
			t.Logf("Wait after %v: drain %v, http hook %v, the rest %v", rep.Elapsed, rep.Drain, hook, overhead)
			// The design allows about 100ms; the bound here is loose for a
			// loaded machine, and still far from the old hang.
			if overhead > time.Second {
				t.Errorf("Wait took %v beyond the drain and the HTTP hook, want well under 1s", overhead)
			}
		})
	}
}
