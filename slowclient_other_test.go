//go:build !unix

package shutdown

import "syscall"

// smallReceiveBuffer leaves the receive buffer as it is where the tests do
// not set socket options; the server's small write buffer and the client's
// pace still hold the server's writes.
func smallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
