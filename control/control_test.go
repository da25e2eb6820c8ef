package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/tund/tund/service"
	"github.com/tund/tund/stack"
	"github.com/tund/tund/stack/link/faults"
)

// newController runs specs (as --serve spells them) on a stack over a
// channel link, with the flags' defaults.
func newController(t *testing.T, serve string) (*Controller, *service.Group) {
	t.Helper()
	c := stack.Config{Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")}, MSL: stack.DefaultMSL,
		FinWait2: stack.DefaultFinWait2, FINACKMerge: stack.DefaultFINACKMerge}
	specs, err := service.ParseList(serve, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	service.Configure(&c, specs)
	st, err := stack.New(channel.New(64, 1500, ""), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := service.NewGroup(ctx, st, 0, log, func(err error) { t.Errorf("a service failed: %v", err) })
	t.Cleanup(func() {
		cancel()
		g.Wait()
		st.Close()
	})
	ctl, err := New(st, g, c, service.Options{}, specs, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	return ctl, g
}

func portOf(s Settings, n uint16) *PortSettings {
	for i := range s.Ports {
		if s.Ports[i].Port == n {
			return &s.Ports[i]
		}
	}
	return nil
}

func TestStartSettings(t *testing.T) {
	ctl, _ := newController(t, "echo/fin-ack-merge=0/drop-fin=once,http")
	s := ctl.Settings()
	if s.Generation != 0 {
		t.Errorf("generation %d at start, want 0", s.Generation)
	}
	for k, want := range map[string]string{"msl": "30s", "fin-ack-merge": "40ms", "drop-fin": "off", "time-wait-rst": "ignore", "max-conns": "0", "half-close": "allow"} {
		if s.Stack[k] != want {
			t.Errorf("stack-wide %s = %q, want %q", k, s.Stack[k], want)
		}
	}
	if _, ok := s.Stack["close-delay"]; ok {
		t.Error("close-delay, a per-port knob, is listed stack-wide")
	}
	echo := portOf(s, 7)
	if echo == nil || echo.Service != "echo" {
		t.Fatalf("port 7: %+v, want echo", echo)
	}
	if want := map[string]string{"fin-ack-merge": "0s", "drop-fin": "once"}; !reflect.DeepEqual(echo.Overrides, want) {
		t.Errorf("port 7 overrides %v, want %v (as --serve set them, normalized)", echo.Overrides, want)
	}
	if echo.Settings["fin-ack-merge"] != "0s" || echo.Settings["half-close"] != "allow" {
		t.Errorf("port 7 settings in force %v", echo.Settings)
	}
	if _, ok := echo.Settings["msl"]; ok {
		t.Error("msl, a stack-wide knob, is listed for a port")
	}
}

func TestSetWholeOrNothing(t *testing.T) {
	ctl, g := newController(t, "echo,http")
	before := ctl.Settings()
	for _, c := range []struct {
		port  uint16
		knobs map[string]string
		field string
	}{
		{0, map[string]string{"drop-fin": "once", "msl": "-1s"}, "msl"},
		{0, map[string]string{"fin-ack-merge": "10ms", "nonsense": "1"}, "nonsense"},
		{0, map[string]string{"close-delay": "1s"}, "close-delay"},
		{0, map[string]string{"max-conns": "many"}, "max-conns"},
		{0, map[string]string{"loss-in": "2"}, "loss-in"},
		{7, map[string]string{"half-close": "close", "msl": "1s"}, "msl"},
		{7, map[string]string{"drop-final-ack": "sometimes"}, "drop-final-ack"},
		{7, map[string]string{"fin-wait2": "0s"}, "fin-wait2"},
		{80, map[string]string{"half-close": "close"}, "half-close"},
		{80, map[string]string{"close-delay": "1s"}, "close-delay"},
		{99, map[string]string{"drop-fin": "once"}, "port"},
	} {
		_, err := ctl.Set(c.port, c.knobs)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("Set(%d, %v) = %v, want an error naming %q", c.port, c.knobs, err, c.field)
		}
	}
	if after := ctl.Settings(); !reflect.DeepEqual(after, before) {
		t.Errorf("refused changes changed the settings:\n%+v\nwant\n%+v", after, before)
	}
	if ctl.Generation() != 0 || len(ctl.Changes()) != 0 {
		t.Errorf("refused changes counted: generation %d, changes %v", ctl.Generation(), ctl.Changes())
	}
	if len(g.Specs()) != 2 {
		t.Errorf("services %v, want echo and http", g.Specs())
	}
}

func TestSetPortClearReset(t *testing.T) {
	ctl, g := newController(t, "echo,http")
	if _, err := ctl.Set(0, map[string]string{"fin-ack-merge": "100ms", "half-close": "close", "drop-fin": "0.5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Set(7, map[string]string{"fin-ack-merge": "0", "half-close": "2s", "close-delay": "1s", "no-fin": "true"}); err != nil {
		t.Fatal(err)
	}
	s := ctl.Settings()
	if s.Generation != 2 {
		t.Errorf("generation %d after two changes, want 2", s.Generation)
	}
	echo, http := portOf(s, 7), portOf(s, 80)
	if echo.Settings["fin-ack-merge"] != "0s" || echo.Settings["half-close"] != "2s" || echo.Settings["drop-fin"] != "0.5" || echo.Settings["no-fin"] != "true" {
		t.Errorf("port 7 in force: %v", echo.Settings)
	}
	if http.Settings["fin-ack-merge"] != "100ms" || http.Settings["no-fin"] != "false" {
		t.Errorf("port 80 in force: %v (port 7's overrides leaked, or the stack-wide ones did not reach it)", http.Settings)
	}
	// The services' options: what each new connection takes.
	opts := map[uint16]service.Options{}
	for _, spec := range g.Specs() {
		opts[spec.Port] = spec.Options
	}
	if o := opts[7]; o.HalfClose.After != 2*time.Second || o.CloseDelay != time.Second || !o.Faults.NoFIN || o.Faults.DropFIN.P != 0.5 || *o.FINACKMerge != 0 {
		t.Errorf("echo's options %+v", o)
	}
	if o := opts[80]; !o.HalfClose.Close || o.Faults.DropFIN.P != 0.5 {
		t.Errorf("http's options %+v", o)
	}

	if _, err := ctl.ClearPort(7); err != nil {
		t.Fatal(err)
	}
	if echo := portOf(ctl.Settings(), 7); len(echo.Overrides) != 0 || echo.Settings["fin-ack-merge"] != "100ms" || echo.Settings["close-delay"] != "0s" {
		t.Errorf("port 7 after clearing: %+v", echo)
	}
	if _, err := ctl.Reset(); err != nil {
		t.Fatal(err)
	}
	s = ctl.Settings()
	if s.Stack["fin-ack-merge"] != "40ms" || s.Stack["half-close"] != "allow" || s.Stack["drop-fin"] != "off" || s.Generation != 4 {
		t.Errorf("after reset: %+v", s)
	}
	if n := ctl.Changes()["fin-ack-merge"]; n != 4 {
		t.Errorf("fin-ack-merge counted %d changes, want 4 (stack-wide twice, port 7 set and cleared)", n)
	}
}

func TestProxies(t *testing.T) {
	ctl, g := newController(t, "echo,proxy:7007=127.0.0.1:7100")
	if _, err := ctl.AddProxy(7008, "127.0.0.1:7101", map[string]string{"abort": "true"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		port   uint16
		target string
		knobs  map[string]string
		is     error
		field  string
	}{
		{7008, "127.0.0.1:7102", nil, ErrPortTaken, "port"},
		{7, "127.0.0.1:7102", nil, ErrPortTaken, "port"},
		{0, "127.0.0.1:7102", nil, nil, "port"},
		{7009, "nowhere", nil, nil, "target"},
		{7009, "127.0.0.1:7102", map[string]string{"close-delay": "1s"}, nil, "close-delay"},
	} {
		_, err := ctl.AddProxy(c.port, c.target, c.knobs)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("AddProxy(%d, %s, %v) = %v, want an error naming %q", c.port, c.target, c.knobs, err, c.field)
		}
	}
	if _, err := ctl.RemoveProxy(7); err == nil {
		t.Error("RemoveProxy removed echo")
	}
	if _, err := ctl.RemoveProxy(7007); err != nil {
		t.Fatal(err)
	}
	var ports []uint16
	for _, s := range g.Specs() {
		ports = append(ports, s.Port)
	}
	if !reflect.DeepEqual(ports, []uint16{7, 7008}) {
		t.Errorf("serving %v, want [7 7008]", ports)
	}
	// The port is free again at once.
	if _, err := ctl.AddProxy(7007, "127.0.0.1:7200", nil); err != nil {
		t.Fatalf("adding a proxy on a port just freed: %v", err)
	}
	if _, err := ctl.Reset(); err != nil {
		t.Fatal(err)
	}
	s := ctl.Settings()
	if len(s.Ports) != 2 || s.Ports[1].Port != 7007 || s.Ports[1].Target != "127.0.0.1:7100" {
		t.Errorf("after reset: %+v, want echo and the proxy of the flags", s.Ports)
	}
	if ctl.Changes()["proxy"] != 6 {
		t.Errorf("proxy changes %d, want 6 (added 7008; removed 7007; added 7007; reset: 7007 and 7008 gone, 7007 back)", ctl.Changes()["proxy"])
	}
}

func TestAdminTarget(t *testing.T) {
	ctl, _ := newController(t, "echo")
	ctl.ForbidTarget(netip.MustParseAddrPort("0.0.0.0:9180"))
	for _, target := range []string{"127.0.0.1:9180", "198.19.1.2:9180", "[::1]:9180"} {
		_, err := ctl.AddProxy(7007, target, nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "target" {
			t.Errorf("a proxy to the admin server at %s: %v, want refused", target, err)
		}
	}
	if _, err := ctl.AddProxy(7007, "127.0.0.1:9181", nil); err != nil {
		t.Errorf("a proxy to another port: %v", err)
	}
	for _, c := range []struct {
		target, admin string
		refused       bool
	}{
		{"127.0.0.1:9180", "127.0.0.1:9180", true},
		{"127.0.0.2:9180", "127.0.0.1:9180", true}, // loopback is one host
		{"198.19.1.2:9180", "127.0.0.1:9180", false},
		{"198.19.1.2:9180", "198.19.1.2:9180", true},
	} {
		err := CheckTarget(netip.MustParseAddrPort(c.target), netip.MustParseAddrPort(c.admin))
		if (err != nil) != c.refused {
			t.Errorf("CheckTarget(%s, admin %s) = %v, want refused %v", c.target, c.admin, err, c.refused)
		}
	}
}

// TestPortSettingsTaken: a port lists only the knobs its service acts on.
func TestPortSettingsTaken(t *testing.T) {
	ctl, _ := newController(t, "echo,http,daytime")
	s := ctl.Settings()
	for port, want := range map[uint16][]string{
		7:  {"half-close", "abort", "close-delay", "fin-ack-merge", "drop-fin"},
		80: {"fin-ack-merge", "drop-fin", "loss-in"},
		13: {"half-close", "abort", "fin-wait2", "drop-final-ack"},
	} {
		for _, k := range want {
			if _, ok := portOf(s, port).Settings[k]; !ok {
				t.Errorf("port %d does not list %s", port, k)
			}
		}
	}
	for _, k := range []string{"half-close", "abort", "fin-wait2", "close-delay"} {
		if v, ok := portOf(s, 80).Settings[k]; ok {
			t.Errorf("http lists %s=%s, which net/http's close ignores", k, v)
		}
	}
	if _, ok := portOf(s, 13).Settings["close-delay"]; ok {
		t.Error("daytime lists close-delay, echo's and discard's")
	}
}

func TestKnobs(t *testing.T) {
	for _, k := range Knobs {
		if k.Reaches == "" {
			t.Errorf("knob %s does not say which connections a change reaches", k.Name)
		}
		if k.Scope != Both && k.Why == "" {
			t.Errorf("knob %s cannot be set everywhere, and does not say why", k.Name)
		}
	}
	for _, name := range faults.Names {
		if _, ok := knob(name); !ok {
			t.Errorf("fault %s is not a knob", name)
		}
	}
	// Values are kept as Knob.get spells them, so that equal settings
	// compare equal, whatever the spelling they were given in.
	ctl, _ := newController(t, "echo")
	for _, c := range []struct{ knob, value, want string }{
		{"msl", "1m", "1m0s"}, {"fin-ack-merge", "0", "0s"}, {"drop-fin", "50%", "0.5"},
		{"drop-final-ack", "0", "off"}, {"time-wait-rst", "close", "close"}, {"abort", "1", "true"},
		{"no-fin", "true", "true"}, {"loss-out", "5%", "0.05"}, {"half-close", "1500ms", "1.5s"},
	} {
		s, err := ctl.Set(0, map[string]string{c.knob: c.value})
		if err != nil || s.Stack[c.knob] != c.want {
			t.Errorf("%s=%s: %q %v, want %q", c.knob, c.value, s.Stack[c.knob], err, c.want)
		}
	}
	if _, err := ctl.Set(0, map[string]string{"no-fin": ""}); err == nil {
		t.Error("no-fin with no value was taken")
	}
}
