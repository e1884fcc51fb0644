//go:build unix

package shutdown

import "syscall"

// smallReceiveBuffer is a net.Dialer Control that gives the socket a 4 KiB
// receive buffer, so that a slow reader holds the server's writes.
func smallReceiveBuffer(_, _ string, rc syscall.RawConn) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
	})
	if cerr != nil {
		return cerr
	}
	return err
}
