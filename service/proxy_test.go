package service

import (
	"strings"
	"testing"
)

// TestParseListProxy covers the proxy's grammar: proxy:PORT=IP:PORT with
// options after it, the target required for proxy and refused elsewhere.
func TestParseListProxy(t *testing.T) {
	specs, err := ParseList("http,proxy:8080=127.0.0.1:80/half-close=close/abort,proxy:8443=[::1]:443", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range specs {
		got = append(got, s.String())
	}
	want := "http:80/half-close=allow proxy:8080=127.0.0.1:80/half-close=close/abort proxy:8443=[::1]:443/half-close=allow"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, c := range []struct{ in, want string }{
		{"proxy", "service proxy needs a port and a target"},
		{"proxy:8080", "service proxy needs a port and a target"},
		{"proxy=127.0.0.1:80", "service proxy needs a port and a target"},
		{"proxy:8080=127.0.0.1", `target "127.0.0.1": want IP:PORT`},
		{"proxy:8080=127.0.0.1:99999", `port "99999" is not a number in [1, 65535]`},
		{"proxy:8080=example.com:80", `target "example.com:80": want IP:PORT`},
		{"proxy:0=127.0.0.1:80", `port "0" is not a number`},
		{"echo:7=127.0.0.1:80", `service "echo" takes no target`},
		{"http=127.0.0.1:80", `service "http" takes no target`},
		{"proxy:8080=127.0.0.1:80/close-delay=1s", "close-delay applies to echo and discard only"},
		{"proxy:80=127.0.0.1:81,http", `services "proxy" and "http" both want port 80`},
	} {
		if _, err := ParseList(c.in, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.in, err, c.want)
		}
	}
}
