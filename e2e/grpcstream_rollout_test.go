package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	grpcClients = 10
	// countMethod is examples/streams' CountMethod: a server stream of the
	// numbers after the request's resume token (a UInt64Value).
	countMethod = "/streams.Counter/Count"
)

// grpcClient reads the counter stream of examples/streams over a
// ClientConn of its own, and when the stream ends with UNAVAILABLE opens
// it again with the resume token from the trailer, after a short backoff.
// It checks that the numbers arrive without a gap or a repeat.
type grpcClient struct {
	last     uint64     // the last number received: the client's resume token
	bad      []string   // numbers out of order, tokens that disagree
	streams  []int      // the pod of each stream that carried a message
	restarts int        // streams ended with UNAVAILABLE
	refused  int        // of those, streams that carried no message (the old pod, after its drain)
	waits    durations  // UNAVAILABLE from a serving stream to the next message
	up       chan<- int // the pod of each stream, at its first message
}

func (c *grpcClient) run(ctx context.Context, conn *grpc.ClientConn) error {
	var endedAt time.Time
	for {
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, countMethod, grpc.WaitForReady(true))
		if err == nil {
			err = s.SendMsg(wrapperspb.UInt64(c.last))
		}
		if err == nil {
			err = s.CloseSend()
		}
		got := 0
		for err == nil {
			m := new(wrapperspb.UInt64Value)
			if err = s.RecvMsg(m); err != nil {
				break
			}
			if got == 0 {
				md, _ := s.Header()
				pid := 0
				if v := md.Get("pod"); len(v) == 1 {
					pid, _ = strconv.Atoi(v[0])
				}
				c.streams = append(c.streams, pid)
				if !endedAt.IsZero() {
					c.waits = append(c.waits, time.Since(endedAt))
					endedAt = time.Time{}
				}
				select {
				case c.up <- pid:
				case <-ctx.Done():
				}
			}
			got++
			if m.Value != c.last+1 {
				c.bad = append(c.bad, fmt.Sprintf("got %d after %d", m.Value, c.last))
			}
			c.last = m.Value
		}
		if ctx.Err() != nil {
			return nil
		}
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("stream: %v", err)
		}
		c.restarts++
		if got == 0 {
			c.refused++
		} else {
			endedAt = time.Now()
		}
		if v := s.Trailer().Get("resume-token"); len(v) == 1 && v[0] != strconv.FormatUint(c.last, 10) {
			c.bad = append(c.bad, fmt.Sprintf("resume token %s, last received %d", v[0], c.last))
		}
		select { // the client's retry backoff
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
	}
}

// TestRolloutGRPCStream reads 10 gRPC server streams through the forwarder
// while the old pod is replaced. At the end of its drain each stream
// returns UNAVAILABLE with a resume token; the client opens the stream
// again with it, lands on the new pod once GracefulStop's GOAWAY has moved
// its connection, and receives every number exactly once.
func TestRolloutGRPCStream(t *testing.T) {
	old, oldAddr := startStreams(t, "old pod", drain)
	next, nextAddr := startStreams(t, "new pod", 0)
	f := newForwarder(t, oldAddr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := make(chan int, 4*grpcClients)
	errs := make(chan error, grpcClients)
	clients := make([]*grpcClient, grpcClients)
	for i := range clients {
		conn, err := grpc.NewClient("passthrough:///"+f.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients[i] = &grpcClient{up: up}
		go func() { errs <- clients[i].run(ctx, conn) }()
	}
	// upOn waits for a stream of each client to carry a message from pid.
	upOn := func(pid int, what string) {
		t.Helper()
		guard := time.After(30 * time.Second)
		for range clients {
			select {
			case p := <-up:
				if p != pid {
					t.Fatalf("%s: a stream on pid %d, want %d", what, p, pid)
				}
			case err := <-errs:
				t.Fatalf("%s: a client ended: %v", what, err)
			case <-guard:
				t.Fatalf("%s: not every client got a message in 30s", what)
			}
		}
	}
	upOn(old.cmd.Process.Pid, "before the rollout")
	time.Sleep(warmup) // the streams flow for a while before the signal
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag)))
	f.switchTo(nextAddr)
	upOn(next.cmd.Process.Pid, "after the old pod's drain")
	time.Sleep(wsAfter) // and for a while on the new pod
	cancel()
	for range clients {
		if err := <-errs; err != nil { // returns once ctx is cancelled
			t.Errorf("client: %v", err)
		}
	}
	if code := old.wait(sig.Add(drain + hangSpan)); code != 0 {
		t.Errorf("old pod: exit code %d, want 0", code)
	}
	exit := old.exitAt.Sub(sig.Add(drain))
	next.sigterm()
	if code := next.wait(time.Now().Add(budget + hangSpan)); code != 0 {
		t.Errorf("new pod: exit code %d, want 0", code)
	}

	var received uint64
	var restarts, refused, moved int
	var waits durations
	for i, c := range clients {
		received += c.last
		restarts += c.restarts
		refused += c.refused
		waits = append(waits, c.waits...)
		if len(c.bad) > 0 {
			t.Errorf("client %d: %v", i, c.bad)
		}
		if n := len(c.streams); n >= 2 && c.streams[0] == old.cmd.Process.Pid && c.streams[n-1] == next.cmd.Process.Pid {
			moved++
		} else {
			t.Errorf("client %d: streams on pids %v, want the old pod's %d first and the new pod's %d last", i, c.streams, old.cmd.Process.Pid, next.cmd.Process.Pid)
		}
		if c.restarts-c.refused != 1 {
			t.Errorf("client %d: %d serving streams ended with UNAVAILABLE, want 1", i, c.restarts-c.refused)
		}
	}
	t.Logf("rollout, gRPC server streams: %d clients, %d messages received, 0 lost, 0 duplicated (checked per message); %d streams ended UNAVAILABLE with a resume token, %d of them retries the old pod refused after its drain; %d of %d clients moved to the new pod; UNAVAILABLE to next message: %v; old pod exit %v after drain end",
		grpcClients, received, restarts, refused, moved, grpcClients, waits, exit.Round(time.Millisecond))
	if moved != grpcClients {
		t.Errorf("%d clients moved to the new pod, want %d", moved, grpcClients)
	}
}
