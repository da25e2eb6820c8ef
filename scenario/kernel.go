package scenario

import (
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel TCP states as TCP_INFO's tcpi_state gives them
// (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpLastAck     = 9
	tcpClosing     = 11
)

// tcpInfo returns the kernel socket's TCP state and pending error
// (SO_ERROR, which reading clears).
func tcpInfo(c *net.TCPConn) (state uint8, soErr error, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	cerr := rc.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return
		}
		state = info.State
		var e int
		if e, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); err == nil && e != 0 {
			soErr = unix.Errno(e)
		}
	})
	if cerr != nil {
		return 0, nil, cerr
	}
	return state, soErr, err
}

// readToEOF reads what the socket still receives until the peer's FIN,
// within timeout.
func readToEOF(c net.Conn, timeout time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	b, err := io.ReadAll(c)
	if err != nil {
		return b, fmt.Errorf("reading until tund's FIN: %w", err)
	}
	return b, nil
}

// exchange writes msg and reads as many bytes back (echo), within 5 s.
func exchange(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("writing to echo: %w", err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("reading echo's answer: %w", err)
	}
	if string(b) != msg {
		return fmt.Errorf("echo answered %q to %q", b, msg)
	}
	return nil
}
