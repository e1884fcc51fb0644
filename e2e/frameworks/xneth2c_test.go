//lint:file-ignore SA1019 x/net deprecates h2c and its HTTP/2 server in favour of http.Server.Protocols; services still run them, and these tests check them under the library.

package frameworks

import (
	"net"
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// wireXNetH2C serves HTTP/2 without TLS through x/net's h2c handler,
// which hijacks the connection: Handler outside it only, so that the
// hijack is tracked. No GOAWAY: HTTPServer ends each connection once x/net
// reports it idle, and a request sent at that moment fails.
func wireXNetH2C(s *service, ln net.Listener) (*http.Server, func() error) {
	srv := &http.Server{Handler: s.m.Handler(h2c.NewHandler(s.mux(), &http2.Server{}))}
	return srv, serveOn(srv, ln)
}

// wireXNetH2CInner wraps x/net's handler too, so that the requests it
// serves carry Connection: close during the drain, which x/net turns into
// GOAWAY.
func wireXNetH2CInner(s *service, ln net.Listener) (*http.Server, func() error) {
	srv := &http.Server{Handler: s.m.Handler(h2c.NewHandler(s.m.Handler(s.mux()), &http2.Server{}))}
	return srv, serveOn(srv, ln)
}

// wireXNetH2CConfigured is wireXNetH2CInner with http2.ConfigureServer
// given the same http2.Server, which has Shutdown send GOAWAY on the h2c
// connections too, those that carry no request during the drain: the
// wiring docs/recipes.md recommends.
func wireXNetH2CConfigured(s *service, ln net.Listener) (*http.Server, func() error) {
	h2s := new(http2.Server)
	srv := &http.Server{Handler: s.m.Handler(h2c.NewHandler(s.m.Handler(s.mux()), h2s))}
	if err := http2.ConfigureServer(srv, h2s); err != nil {
		panic(err)
	}
	return srv, serveOn(srv, ln)
}
