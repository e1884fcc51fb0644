package shutdowngrpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/gracefulgo/shutdown/shutdowngrpc"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = shutdown.WithLogger(slog.New(slog.DiscardHandler))

// newManager returns a Manager that only Trigger starts, with no drain
// delay and a budget far beyond any test, released at the test's end.
func newManager(t *testing.T, opts ...shutdown.Option) *shutdown.Manager {
	t.Helper()
	m := shutdown.New(append([]shutdown.Option{shutdown.WithSignals(), quiet, shutdown.WithTimeout(30 * time.Second)}, opts...)...)
	t.Cleanup(m.Release)
	return m
}

// serve starts a real grpc-go server on loopback with m's stream
// interceptor and the services register adds, and returns a client
// connected to it. Both are closed at the test's end.
func serve(t *testing.T, m *shutdown.Manager, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.StreamInterceptor(shutdowngrpc.StreamServerInterceptor(m)))
	register(s)
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(ln)
	}()
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		<-served
	})
	return conn
}

// holdMethod is a server stream (test.Streams/Hold, described by hand:
// no generated code) whose handler sends "open", then returns what the
// test's function makes of its stream.
const holdMethod = "/test.Streams/Hold"

func registerHold(s *grpc.Server, calls *atomic.Int32, ret func(stream grpc.ServerStream) error) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Streams",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Hold",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				calls.Add(1)
				if err := stream.SendMsg(wrapperspb.String("open")); err != nil {
					return err
				}
				return ret(stream)
			},
		}},
	}, struct{}{})
}

// openHold opens a Hold stream and, when the handler runs, reads its
// "open"; it returns the stream and the error that ended it, if it ended
// before that.
func openHold(t *testing.T, conn *grpc.ClientConn) (grpc.ClientStream, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang guard
	t.Cleanup(cancel)
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, holdMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(wrapperspb.String("")); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	msg := new(wrapperspb.StringValue)
	if err := cs.RecvMsg(msg); err != nil {
		return cs, err
	}
	if msg.Value != "open" {
		t.Fatalf("RecvMsg() = %q, want open", msg.Value)
	}
	return cs, nil
}

// end reads cs to its end and returns its status (OK for io.EOF).
func end(cs grpc.ClientStream) *status.Status {
	for {
		err := cs.RecvMsg(new(wrapperspb.StringValue))
		if err == io.EOF {
			return status.New(codes.OK, "")
		}
		if err != nil {
			return status.Convert(err)
		}
	}
}

// TestStreamStatusAtShutdown checks what the client of a stream sees when
// its handler returns after m.Context() was cancelled: the results that
// mean "ended by the context" become Unavailable, the status clients retry
// on; any other error passes through; and a stream that ended before
// shutdown keeps its status.
func TestStreamStatusAtShutdown(t *testing.T) {
	errOwn := status.Error(codes.Aborted, "the handler's own status")
	tests := []struct {
		name     string
		shutdown bool // trigger shutdown while the handler waits
		ret      func(ctx context.Context) error
		code     codes.Code
		msg      string
	}{
		{"nil becomes Unavailable", true, func(ctx context.Context) error { <-ctx.Done(); return nil },
			codes.Unavailable, "shutdown: server is shutting down"},
		{"context error becomes Unavailable", true, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			codes.Unavailable, "shutdown: server is shutting down"},
		{"the shutdown's cause becomes Unavailable", true, func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) },
			codes.Unavailable, "shutdown: server is shutting down"},
		{"Canceled (grpc's health Watch) becomes Unavailable", true, func(ctx context.Context) error {
			<-ctx.Done()
			return status.Error(codes.Canceled, "Stream has ended.")
		}, codes.Unavailable, "shutdown: server is shutting down"},
		{"a status of the handler's own passes through", true, func(ctx context.Context) error { <-ctx.Done(); return errOwn },
			codes.Aborted, "the handler's own status"},
		{"a plain error passes through", true, func(ctx context.Context) error { <-ctx.Done(); return errors.New("disk full") },
			codes.Unknown, "disk full"},
		{"the context's cause is the shutdown's", true, func(ctx context.Context) error {
			<-ctx.Done()
			return status.Error(codes.FailedPrecondition, context.Cause(ctx).Error())
		}, codes.FailedPrecondition, "shutdown: triggered"},
		{"nil before shutdown stays OK", false, func(context.Context) error { return nil },
			codes.OK, ""},
		{"Canceled before shutdown stays Canceled", false, func(context.Context) error { return status.Error(codes.Canceled, "gone") },
			codes.Canceled, "gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t)
			var calls atomic.Int32
			conn := serve(t, m, func(s *grpc.Server) {
				registerHold(s, &calls, func(stream grpc.ServerStream) error { return tt.ret(stream.Context()) })
			})
			cs, err := openHold(t, conn)
			if err != nil {
				t.Fatalf("RecvMsg() = %v, want the handler's first message", err)
			}
			if tt.shutdown {
				m.Trigger()
				if err := m.Wait(); err != nil {
					t.Fatalf("Wait() = %v, want nil", err)
				}
			}
			if st := end(cs); st.Code() != tt.code || st.Message() != tt.msg {
				t.Errorf("stream ended with %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

// TestStreamOpenedAfterContextEndsAtOnceWithUnavailable checks that a
// stream opened once m.Context() is done never reaches its handler (which
// here would wait forever) and ends at once with Unavailable.
func TestStreamOpenedAfterContextEndsAtOnceWithUnavailable(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	var calls atomic.Int32
	conn := serve(t, m, func(s *grpc.Server) {
		registerHold(s, &calls, func(grpc.ServerStream) error { select {} })
	})
	m.Trigger()
	<-m.Context().Done()
	_, err := openHold(t, conn)
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "shutdown: server is shutting down" {
		t.Errorf("stream opened after Context() ended: %v, want Unavailable", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler called %d times, want 0", n)
	}
}

// TestTrailerKeptWithUnavailable checks that a trailer the handler set
// (a resume token, say) reaches the client with the Unavailable that
// replaced its nil.
func TestTrailerKeptWithUnavailable(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	var calls atomic.Int32
	conn := serve(t, m, func(s *grpc.Server) {
		registerHold(s, &calls, func(stream grpc.ServerStream) error {
			<-stream.Context().Done()
			stream.SetTrailer(metadata.Pairs("resume-token", "42"))
			return nil
		})
	})
	cs, err := openHold(t, conn)
	if err != nil {
		t.Fatalf("RecvMsg() = %v, want the handler's first message", err)
	}
	m.Trigger()
	if st := end(cs); st.Code() != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", st.Code())
	}
	if got := cs.Trailer().Get("resume-token"); len(got) != 1 || got[0] != "42" {
		t.Errorf("Trailer()[resume-token] = %q, want [42]", got)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

// TestNilArgumentsPanic checks that misuse panics at the call, naming the
// argument.
func TestNilArgumentsPanic(t *testing.T) {
	m := newManager(t)
	tests := []struct {
		want string
		call func()
	}{
		{"shutdown: shutdowngrpc.StreamServerInterceptor: m is nil", func() { shutdowngrpc.StreamServerInterceptor(nil) }},
		{"shutdown: shutdowngrpc.Health: m is nil", func() { shutdowngrpc.Health(nil, nil) }},
		{"shutdown: shutdowngrpc.Health: hs is nil", func() { shutdowngrpc.Health(m, nil) }},
	}
	for _, tt := range tests {
		func() {
			defer func() {
				if got := recover(); got != tt.want {
					t.Errorf("panic = %v, want %q", got, tt.want)
				}
			}()
			tt.call()
		}()
	}
}
