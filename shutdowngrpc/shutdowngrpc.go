// Package shutdowngrpc ends a grpc-go server's streams and health checks in
// step with a [shutdown.Manager], so that a shutdown ends within
// milliseconds of the drain delay instead of waiting, until the budget
// runs out, for streams that never end by themselves: a health Watch
// (grpc-go's client-side health checking, Envoy), a subscription.
//
// Wire both functions beside the Manager's [shutdown.GRPCServer] hook:
//
//	m := shutdown.New()
//	s := grpc.NewServer(grpc.StreamInterceptor(shutdowngrpc.StreamServerInterceptor(m)))
//	hs := health.NewServer()
//	healthpb.RegisterHealthServer(s, hs)
//	shutdowngrpc.Health(m, hs)
//	m.Add("grpc", shutdown.GRPCServer(s))
//
// From SIGTERM on, health answers NOT_SERVING (Watch clients hear it at
// once) while the server keeps serving through the drain delay. When
// [shutdown.Manager.Context] is cancelled, after the drain, every stream's
// context ends too; a handler that returns then ends its stream with
// codes.Unavailable, the status clients retry on, so they reconnect to
// another instance; GracefulStop then returns as soon as the unary calls
// in flight have. A handler blocked in RecvMsg or SendMsg is not woken
// (see [StreamServerInterceptor]).
//
// It is a module of its own, so that importers of shutdown download no
// gRPC.
package shutdowngrpc

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
)

// errGoingAway ends a stream that shutdown ended, and one opened after.
// Unavailable is the status gRPC clients retry on; grpc's own health
// server would say Canceled, which they do not.
var errGoingAway = status.Error(codes.Unavailable, "shutdown: server is shutting down")

// StreamServerInterceptor returns a stream interceptor that ends each
// stream's context when m.Context() is cancelled (after the drain delay,
// before the hooks run), as well as when the client leaves: a
// handler that returns when its stream's context is done (grpc's health
// Watch does) needs nothing else. [context.Cause] of that context is then
// the shutdown's cause. A handler blocked in RecvMsg or SendMsg is not
// woken: grpc-go's calls watch the transport's own context, which only
// the client, the handler's return or Stop end. A handler that waits for
// its client's messages (a client or bidirectional stream) receives them
// on a goroutine of its own and selects on its stream's context as well;
// that goroutine's RecvMsg returns once the handler has.
//
// When m.Context() ended before the handler returned, a nil result, a
// context error (or the shutdown's cause) and codes.Canceled become
// codes.Unavailable, so the client retries, on another instance; any other
// error (a status of the handler's own, with its message, say) passes
// through unchanged.
// A stream opened after m.Context() ended is not handed to its handler: it
// ends at once with codes.Unavailable. Install it with
// grpc.StreamInterceptor, or first in grpc.ChainStreamInterceptor so the
// interceptors after it see the shorter context. It panics if m is nil.
func StreamServerInterceptor(m *shutdown.Manager) grpc.StreamServerInterceptor {
	if m == nil {
		panic("shutdown: shutdowngrpc.StreamServerInterceptor: m is nil")
	}
	stop := m.Context()
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if stop.Err() != nil {
			return errGoingAway
		}
		ctx, cancel := context.WithCancelCause(ss.Context())
		defer cancel(nil)
		unhook := context.AfterFunc(stop, func() { cancel(context.Cause(stop)) })
		defer unhook() // off stop once the handler has returned or panicked
		err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		// Asked of stop itself, not of unhook: stop is done before its
		// cancellation reaches the AfterFunc, so a handler that watches
		// m.Context() directly can return, and unhook win, in between.
		if stop.Err() == nil {
			return err
		}
		if err == nil || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Cause(stop)) {
			return errGoingAway
		}
		return err
	}
}

// serverStream is a stream whose context also ends at m.Context().
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// Health makes hs the gRPC twin of [shutdown.Manager.ReadinessHandler]:
// when shutdown starts ([shutdown.Manager.Stopping], before the drain
// delay), it sets every service hs knows, "" included, to NOT_SERVING,
// through hs.Shutdown, which also makes hs ignore later SetServingStatus
// calls; Watch clients are told at once, and load balancers and
// client-side health checks move traffic away while the server still
// serves. It follows ReadinessHandler's answer: where that still says 200
// through a shutdown (an upgrade's, when a new process serves the same
// sockets), hs stays as it is.
//
// Health returns at once; the status changes on a goroutine of its own,
// soon after Stopping is closed. That goroutine ends then, or at
// [shutdown.Manager.Done] for a Manager released before any shutdown
// (hs then stays as it is); for a Manager that does neither, it runs as
// long as the process.
// Health ends no Watch stream: [StreamServerInterceptor] does, when
// m.Context() is cancelled. It panics if m or hs is nil.
func Health(m *shutdown.Manager, hs *health.Server) {
	if m == nil {
		panic("shutdown: shutdowngrpc.Health: m is nil")
	}
	if hs == nil {
		panic("shutdown: shutdowngrpc.Health: hs is nil")
	}
	go func() {
		select {
		case <-m.Stopping():
		case <-m.Done():
		}
		select {
		case <-m.Stopping():
			if !ready(m) {
				hs.Shutdown()
			}
		default: // released before any shutdown
		}
	}()
}

// ready asks m's ReadinessHandler, in-process, whether this instance still
// counts as ready. Stopping alone cannot tell: an upgrade's shutdown closes
// it too, but its cause shows in m.Context() only after the handoff, and a
// status set to NOT_SERVING cannot be put back as it was (hs.Resume sets
// every service SERVING). The readiness answer is the Manager's one word
// on it, so health and the HTTP probe never disagree.
func ready(m *shutdown.Manager) bool {
	w := &statusRecorder{header: http.Header{}, code: http.StatusOK}
	r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: http.Header{}}
	m.ReadinessHandler().ServeHTTP(w, r)
	return w.code == http.StatusOK
}

// statusRecorder keeps the status of a response and drops the rest.
type statusRecorder struct {
	header http.Header
	code   int
	wrote  bool
}

func (w *statusRecorder) Header() http.Header { return w.header }

func (w *statusRecorder) Write(b []byte) (int, error) {
	w.wrote = true
	return len(b), nil
}

func (w *statusRecorder) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
}
