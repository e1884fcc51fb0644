package shutdowngrpc_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestReceiveLoopOnItsOwnGoroutineEndsAtContext checks the pattern the
// docs give for a handler that waits for its client's messages (a client
// or bidirectional stream): grpc-go's RecvMsg watches only the transport's
// context, which the interceptor cannot end, so the handler receives on a
// goroutine of its own and selects on its stream's context. The stream
// ends with Unavailable when m.Context() is cancelled, the GRPCServer hook
// returns long before its bound, and the receiving goroutine ends with the
// stream (goleak, in TestMain, checks it).
func TestReceiveLoopOnItsOwnGoroutineEndsAtContext(t *testing.T) {
	m := newManager(t)
	var calls atomic.Int32
	var s *grpc.Server
	conn := serve(t, m, func(srv *grpc.Server) {
		s = srv
		registerHold(srv, &calls, func(stream grpc.ServerStream) error {
			recvd := make(chan error, 1)
			go func() {
				for {
					if err := stream.RecvMsg(new(wrapperspb.StringValue)); err != nil {
						recvd <- err
						return
					}
				}
			}()
			select {
			case err := <-recvd: // the client closed its side, or left
				return err
			case <-stream.Context().Done(): // the client left, or shutdown
				return nil
			}
		})
	})
	m.Add("grpc", shutdown.GRPCServer(s), shutdown.Timeout(20*time.Second))
	ctx := t.Context()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, holdMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(wrapperspb.String("")); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
		t.Fatalf("RecvMsg() = %v, want the handler's first message", err)
	}
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if rep := m.Report(); rep.Elapsed > 10*time.Second {
		t.Errorf("shutdown took %v, want the stream ended at m.Context(), long before the hook's 20s bound", rep.Elapsed)
	}
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", err)
	}
}
