package main

import (
	"context"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// CountMethod is the full name of the counter's server stream. Its request
// is a google.protobuf.UInt64Value, the resume token: the last number the
// client has; the stream sends the numbers after it, one every 20 ms, as
// UInt64Values. The service is described by hand (counterDesc) so that the
// example needs no generated code.
const CountMethod = "/streams.Counter/Count"

// counterDesc is what protoc-gen-go-grpc would generate for
// service Counter { rpc Count(UInt64Value) returns (stream UInt64Value); }.
var counterDesc = grpc.ServiceDesc{
	ServiceName: "streams.Counter",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Count",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := new(wrapperspb.UInt64Value)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(*counter).count(req.GetValue(), stream)
		},
	}},
}

type counter struct{ stop context.Context }

// count sends the numbers after token until the client leaves or stop
// (m.Context()) is done. Then it returns UNAVAILABLE, which the client
// retries, with the resume token in the trailer "resume-token": the last
// number sent. The client already has every number up to it, because a
// stream's messages arrive before its status.
func (c *counter) count(token uint64, stream grpc.ServerStream) error {
	stream.SetHeader(metadata.Pairs("pod", strconv.Itoa(os.Getpid())))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stop.Done():
			stream.SetTrailer(metadata.Pairs("resume-token", strconv.FormatUint(token, 10)))
			return status.Error(codes.Unavailable, "server going away: retry with the resume token")
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-tick.C:
		}
		if err := stream.SendMsg(wrapperspb.UInt64(token + 1)); err != nil {
			return err
		}
		token++
	}
}
