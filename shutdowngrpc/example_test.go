package shutdowngrpc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/gracefulgo/shutdown/shutdowngrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A subscription handler waits on its stream's context only; the
// interceptor ends that context when the Manager's Context is cancelled,
// the client's stream ends with Unavailable (so it resubscribes
// elsewhere), and GracefulStop, run by the GRPCServer hook, returns at once.
func ExampleStreamServerInterceptor() {
	m := shutdown.New(shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	s := grpc.NewServer(grpc.StreamInterceptor(shutdowngrpc.StreamServerInterceptor(m)))
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "news.Feed",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Subscribe",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				stream.SendMsg(wrapperspb.String("welcome"))
				<-stream.Context().Done() // the client left, or shutdown
				return nil
			},
		}},
	}, struct{}{})
	m.Add("grpc", shutdown.GRPCServer(s))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)

	conn, _ := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	sub, _ := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, "/news.Feed/Subscribe")
	sub.SendMsg(wrapperspb.String("sports"))
	sub.CloseSend()
	msg := new(wrapperspb.StringValue)
	sub.RecvMsg(msg)
	fmt.Println("got:", msg.Value)

	m.Trigger() // as SIGTERM would
	err := sub.RecvMsg(msg)
	fmt.Println("stream ended:", status.Code(err))
	fmt.Println("Wait:", m.Wait())
	// Output:
	// got: welcome
	// stream ended: Unavailable
	// Wait: <nil>
}

// A health Watch client (grpc-go's client-side health checking, Envoy)
// hears NOT_SERVING when shutdown starts, while the server still serves
// through the drain delay; at its end the interceptor ends the Watch with
// Unavailable, and the client reconnects elsewhere.
func ExampleHealth() {
	m := shutdown.New(shutdown.WithDrainDelay(500*time.Millisecond), shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	s := grpc.NewServer(grpc.StreamInterceptor(shutdowngrpc.StreamServerInterceptor(m)))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	shutdowngrpc.Health(m, hs)
	m.Add("grpc", shutdown.GRPCServer(s))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)

	conn, _ := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	w, _ := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	for {
		res, err := w.Recv()
		if err != nil {
			fmt.Println("Watch ended:", status.Code(err))
			break
		}
		fmt.Println(res.Status)
		if res.Status == healthpb.HealthCheckResponse_SERVING {
			m.Trigger() // as SIGTERM would
		}
	}
	fmt.Println("Wait:", m.Wait())
	// Output:
	// SERVING
	// NOT_SERVING
	// Watch ended: Unavailable
	// Wait: <nil>
}
