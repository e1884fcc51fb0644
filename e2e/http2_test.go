package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestRolloutHTTP2 is the rolling update of TestRolloutVegeta over HTTP/2
// without TLS (examples/httpserver -h2c, Go's HTTP/2 client with prior
// knowledge): the drain's Connection: close becomes a GOAWAY, the client
// opens its next connection through the forwarder to the new pod, and no
// request fails.
func TestRolloutHTTP2(t *testing.T) {
	runFor := warmup + slowD + time.Second
	rollout(t, runFor, func(addr string, runFor time.Duration) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + "/")
		if err != nil {
			t.Errorf("GET over HTTP/2: %v", err)
			return
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("GET: protocol %s, want HTTP/2", resp.Proto)
		}
		l := attackWith("http://"+addr+"/", tr)
		time.Sleep(runFor)
		s := l.stop()
		t.Logf("rollout, HTTP/2 (h2c): %d requests at %d/s, %d failed", s.sent, rate, s.failed)
		if s.failed > 0 {
			t.Errorf("%d of %d requests failed: %v", s.failed, s.sent, s.errs)
		}
	}, "-h2c")
}
