package shutdown

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
)

// Handler wraps a server's handler for a graceful drain: from
// [Manager.Stopping] on, every response carries "Connection: close", so a
// keep-alive connection that carries a request during the drain delay is
// closed cleanly by the server after that response, and the client
// reconnects, through the load balancer, to another instance. Do not use
// [http.Server.SetKeepAlivesEnabled] for this: it closes idle connections
// under clients that are about to send on them.
func (m *Manager) Handler(h http.Handler) http.Handler {
	if h == nil {
		panic("shutdown: Handler: h is nil")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-m.stopping:
			w.Header().Set("Connection", "close")
		default:
		}
		h.ServeHTTP(w, r)
	})
}

// ReadinessHandler answers 200 until shutdown starts and 503 from then on,
// for a Kubernetes readinessProbe or a load balancer's health check.
func (m *Manager) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		select {
		case <-m.stopping:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "shutting down")
		default:
			fmt.Fprintln(w, "ok")
		}
	})
}

// HTTPServer adapts s to a Hook that drains it: [http.Server.Shutdown] with
// the hook's context, so listeners close and in-flight requests finish; if
// the context ends first, [http.Server.Close] closes the connections still
// open, and the hook reports the timeout. It never changes s's settings.
// Shutdown does not track hijacked connections (WebSockets): close those
// from [http.Server.RegisterOnShutdown]. It panics if s is nil.
func HTTPServer(s *http.Server) Hook {
	if s == nil {
		panic("shutdown: HTTPServer: s is nil")
	}
	return func(ctx context.Context) error {
		err := s.Shutdown(ctx)
		if err == nil || ctx.Err() == nil {
			return err
		}
		if cerr := s.Close(); cerr != nil {
			return errors.Join(err, cerr)
		}
		return fmt.Errorf("http server closed with requests in flight: %w", err)
	}
}

// GRPCServer adapts a *grpc.Server (or anything with GracefulStop and Stop)
// to a Hook: GracefulStop, which waits for in-flight RPCs; if the hook's
// context ends first, Stop, which cancels them. The library takes no gRPC
// dependency. It panics if s is nil.
func GRPCServer(s interface {
	GracefulStop()
	Stop()
}) Hook {
	if s == nil || isNilPointer(s) {
		panic("shutdown: GRPCServer: s is nil")
	}
	return func(ctx context.Context) error {
		done := make(chan struct{})
		go func() {
			s.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
		}
		s.Stop()
		<-done
		return fmt.Errorf("grpc server stopped with calls in flight: %w", ctx.Err())
	}
}

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
