package monitor

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// Listen opens a TCP listener for the monitor server and settles its token.
//
// A listener bound to the loopback interface (127.0.0.0/8, ::1 or
// "localhost") needs no token: Listen returns token unchanged, possibly empty.
// Any other address (":8080", "0.0.0.0:8080", a LAN address) requires one: if
// token is empty, Listen generates a random 128-bit token (hex) and returns
// it, so the caller can print DashboardURL. Pass the returned token as
// Options.Token to NewServer.
func Listen(addr, token string) (ln net.Listener, tok string, err error) {
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	// Judge by the address actually bound: "localhost" may resolve oddly.
	if token == "" && !isLoopbackAddr(ln.Addr()) {
		token, err = NewToken()
		if err != nil {
			ln.Close()
			return nil, "", err
		}
	}
	return ln, token, nil
}

// NewToken returns a random 128-bit token, hex encoded.
func NewToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("monitor: generating token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func isLoopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// IsLoopback reports whether addr ("host:port") names a loopback address.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// DashboardURL is the address to open in a browser for the server listening
// on ln: http://HOST:PORT/ with ?token= when token is set (and &run= when run
// is set). An unspecified bind address (0.0.0.0, ::) is shown as the
// machine's host name.
func DashboardURL(ln net.Listener, token, run string) string {
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/"}
	q := url.Values{}
	if token != "" {
		q.Set("token", token)
	}
	if run != "" {
		q.Set("run", run)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
