package main

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TickMethod is the full name of the ticker's server stream: after an
// Empty request it sends 1, 2, 3, ... as UInt64Values, one every 50 ms,
// until its stream's context ends. The service is described by hand
// (tickerDesc) so that the example needs no generated code.
const TickMethod = "/ticks.Ticker/Tick"

// tickerDesc is what protoc-gen-go-grpc would generate for
// service Ticker { rpc Tick(google.protobuf.Empty) returns (stream google.protobuf.UInt64Value); }.
var tickerDesc = grpc.ServiceDesc{
	ServiceName: "ticks.Ticker",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Tick",
		ServerStreams: true,
		Handler:       tick,
	}},
}

// tick watches its stream's context and nothing else: the shutdown
// interceptor ends that context when m.Context() is cancelled and turns
// the nil it returns then into UNAVAILABLE, which clients retry.
func tick(_ any, stream grpc.ServerStream) error {
	if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for n := uint64(1); ; n++ {
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
		if err := stream.SendMsg(wrapperspb.UInt64(n)); err != nil {
			return err
		}
	}
}
