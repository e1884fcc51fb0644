package shutdowngrpc_test

import (
	"context"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// TestHandlerEndedByManagerContextGetsUnavailable checks a handler that
// watches m.Context() itself, not its stream's context (a helper shared
// with the service's workers, say): it returns nil after m.Context()
// ended, so its client must see Unavailable. On main at 4d8f5bb the
// interceptor asked its context.AfterFunc whether m.Context() had ended;
// m.Context() is done before its cancellation reaches that AfterFunc, so a
// handler woken by the done channel itself could return, and stop the
// AfterFunc, first: its nil then went out as OK, a stream the client took
// for finished. The children added to m.Context() here widen that window
// the way a busy server's other streams do; the fixed interceptor asks
// m.Context() and has no window at all.
func TestHandlerEndedByManagerContextGetsUnavailable(t *testing.T) {
	m := newManager(t)
	for range 100_000 { // other work under m.Context(), cancelled with it
		_, cancel := context.WithCancel(m.Context())
		t.Cleanup(cancel)
	}
	var calls atomic.Int32
	conn := serve(t, m, func(s *grpc.Server) {
		registerHold(s, &calls, func(grpc.ServerStream) error { <-m.Context().Done(); return nil })
	})
	var streams []grpc.ClientStream
	for range 8 {
		cs, err := openHold(t, conn)
		if err != nil {
			t.Fatalf("RecvMsg() = %v, want the handler's first message", err)
		}
		streams = append(streams, cs)
	}
	m.Trigger()
	for i, cs := range streams {
		if st := end(cs); st.Code() != codes.Unavailable {
			t.Errorf("stream %d ended with %v %q, want Unavailable: its handler returned after m.Context() ended", i, st.Code(), st.Message())
		}
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}
