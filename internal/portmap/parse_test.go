package portmap

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
)

func TestParsePublish(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		in    string
		want  Spec
		canon string // Spec.String, if not in
	}{
		{"80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{"8080:80", Spec{HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "8080:80/tcp"},
		{"127.0.0.1:8080:80", Spec{HostIP: ip("127.0.0.1"), HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "127.0.0.1:8080:80/tcp"},
		{"127.0.0.1::80", Spec{HostIP: ip("127.0.0.1"), ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "127.0.0.1::80/tcp"},
		{"[::1]:8080:80", Spec{HostIP: ip("::1"), HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "[::1]:8080:80/tcp"},
		{"[2001:db8::1]::80", Spec{HostIP: ip("2001:db8::1"), ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "[2001:db8::1]::80/tcp"},
		{"[::]:53:53/udp", Spec{HostIP: ip("::"), HostPortFirst: 53, HostPortLast: 53, ContainerFirst: 53, ContainerLast: 53, Proto: UDP}, "[::]:53:53/udp"},
		{"[::ffff:10.0.0.1]:80:80", Spec{HostIP: ip("10.0.0.1"), HostPortFirst: 80, HostPortLast: 80, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "10.0.0.1:80:80/tcp"},
		{"[10.0.0.1]:80:80", Spec{HostIP: ip("10.0.0.1"), HostPortFirst: 80, HostPortLast: 80, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "10.0.0.1:80:80/tcp"},
		{"8000-8010:80-90", Spec{HostPortFirst: 8000, HostPortLast: 8010, ContainerFirst: 80, ContainerLast: 90, Proto: TCP}, "8000-8010:80-90/tcp"},
		{"8000-8010:80", Spec{HostPortFirst: 8000, HostPortLast: 8010, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "8000-8010:80/tcp"},
		{"8000-8000:80", Spec{HostPortFirst: 8000, HostPortLast: 8000, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "8000:80/tcp"},
		{"80-90", Spec{ContainerFirst: 80, ContainerLast: 90, Proto: TCP}, "80-90/tcp"},
		// docker run -p's long form.
		{"published=8080,target=80", Spec{HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "8080:80/tcp"},
		{"target=53,published=5353,protocol=udp,mode=host", Spec{HostPortFirst: 5353, HostPortLast: 5353, ContainerFirst: 53, ContainerLast: 53, Proto: UDP}, "5353:53/udp"},
		{"target=80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{"80/udp", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: UDP}, "80/udp"},
		{"53:53/udp", Spec{HostPortFirst: 53, HostPortLast: 53, ContainerFirst: 53, ContainerLast: 53, Proto: UDP}, "53:53/udp"},
		{"9000:9000/sctp", Spec{HostPortFirst: 9000, HostPortLast: 9000, ContainerFirst: 9000, ContainerLast: 9000, Proto: SCTP}, "9000:9000/sctp"},
		{"80/UDP", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: UDP}, "80/udp"},
		{"0.0.0.0:80:80", Spec{HostIP: ip("0.0.0.0"), HostPortFirst: 80, HostPortLast: 80, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "0.0.0.0:80:80/tcp"},
		{"65535:1", Spec{HostPortFirst: 65535, HostPortLast: 65535, ContainerFirst: 1, ContainerLast: 1, Proto: TCP}, "65535:1/tcp"},
		{"0080:080", Spec{HostPortFirst: 80, HostPortLast: 80, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80:80/tcp"},
		// Forms Docker accepts too: an empty or zero host port is a random
		// one, an empty IP every address, an empty protocol tcp, and an
		// IPv6 address may go without brackets.
		{"0:80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{":80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{"::80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{":8080:80", Spec{HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "8080:80/tcp"},
		{"80/", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "80/tcp"},
		{"2001:db8::1:8080:80", Spec{HostIP: ip("2001:db8::1"), HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "[2001:db8::1]:8080:80/tcp"},
		{"2001:db8::1::80", Spec{HostIP: ip("2001:db8::1"), ContainerFirst: 80, ContainerLast: 80, Proto: TCP}, "[2001:db8::1]::80/tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePublish(tt.in)
			if err != nil {
				t.Fatalf("ParsePublish(%q): %v", tt.in, err)
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Fatalf("ParsePublish(%q) = %+v, want [%+v]", tt.in, got, tt.want)
			}
			if s := got[0].String(); s != tt.canon {
				t.Errorf("String() = %q, want %q", s, tt.canon)
			}
		})
	}
}

func TestParsePublishErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `invalid publish spec "": empty value`},
		{"published=8080,80", `invalid publish spec "published=8080,80": want name=value, got "80"`},
		{"published=8080", `invalid publish spec "published=8080": empty port`},
		{"0", `invalid publish spec "0": port 0 out of range 1-65535`},
		{"65536", `invalid publish spec "65536": port 65536 out of range 1-65535`},
		{"99999999999999999999999", `invalid publish spec "99999999999999999999999": port 99999999999999999999999 out of range 1-65535`},
		{"80:0", `invalid publish spec "80:0": port 0 out of range 1-65535`},
		{"http", `invalid publish spec "http": bad port "http"`},
		{"+80", `invalid publish spec "+80": bad port "+80"`},
		{" 80", `invalid publish spec " 80": bad port " 80"`},
		{"-80", `invalid publish spec "-80": empty port`},
		{"80-", `invalid publish spec "80-": empty port`},
		{"90-80", `invalid publish spec "90-80": reversed port range 90-80`},
		{"8010-8000:80", `invalid publish spec "8010-8000:80": reversed port range 8010-8000`},
		{"80-90-100", `invalid publish spec "80-90-100": bad port "90-100"`},
		{"8000-8005:80-90", `invalid publish spec "8000-8005:80-90": host range 8000-8005 and container range 80-90 differ in length`},
		{"8000:80-90", `invalid publish spec "8000:80-90": host range 8000 and container range 80-90 differ in length`},
		{"80/icmp", `invalid publish spec "80/icmp": unknown protocol "icmp" (want tcp, udp or sctp)`},
		{"80/tcp/udp", `invalid publish spec "80/tcp/udp": unknown protocol "tcp/udp" (want tcp, udp or sctp)`},
		{"/tcp", `invalid publish spec "/tcp": empty port`},
		{"8080:", `invalid publish spec "8080:": empty port`},
		{"1.2.3:80:80", `invalid publish spec "1.2.3:80:80": bad host IP "1.2.3"`},
		{"localhost:80:80", `invalid publish spec "localhost:80:80": bad host IP "localhost"`},
		{":::80", `invalid publish spec ":::80": too many colons; want [IP:][HOSTPORT:]CONTAINERPORT`}, // Docker too: ":" is no IP
		{"0:80-90", `invalid publish spec "0:80-90": host port 0 with a container range: the ranges differ in length`},
		{"1.2.3.4:80:80:80", `invalid publish spec "1.2.3.4:80:80:80": too many colons; want [IP:][HOSTPORT:]CONTAINERPORT`},
		{"[::1:8080:80", `invalid publish spec "[::1:8080:80": missing ] after IPv6 address`},
		{"[]:8080:80", `invalid publish spec "[]:8080:80": empty host IP in brackets`},
		{"[::1]:80", `invalid publish spec "[::1]:80": want [IPv6]:HOSTPORT:CONTAINERPORT (HOSTPORT may be empty)`},
		{"[::1]8080:80", `invalid publish spec "[::1]8080:80": want [IPv6]:HOSTPORT:CONTAINERPORT (HOSTPORT may be empty)`},
		{"[::1]:1:2:3", `invalid publish spec "[::1]:1:2:3": want [IPv6]:HOSTPORT:CONTAINERPORT (HOSTPORT may be empty)`},
		{"[::1]", `invalid publish spec "[::1]": want [IPv6]:HOSTPORT:CONTAINERPORT (HOSTPORT may be empty)`},
		{"[fe80::1%eth0]:80:80", `invalid publish spec "[fe80::1%eth0]:80:80": host IP "fe80::1%eth0": zones are not supported`},
		{"[::g]:80:80", `invalid publish spec "[::g]:80:80": bad host IP "::g"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePublish(tt.in)
			if err == nil {
				t.Fatalf("ParsePublish(%q) = %+v, want error %q", tt.in, got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("ParsePublish(%q) error\n got: %s\nwant: %s", tt.in, err, tt.want)
			}
			if k := errdefs.KindOf(err); k != errdefs.KindInvalid {
				t.Errorf("kind = %v, want KindInvalid", k)
			}
		})
	}
}

func TestParseExpose(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"80", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: TCP}},
		{"80/udp", Spec{ContainerFirst: 80, ContainerLast: 80, Proto: UDP}},
		{"8000-8010/tcp", Spec{ContainerFirst: 8000, ContainerLast: 8010, Proto: TCP}},
		{"9/SCTP", Spec{ContainerFirst: 9, ContainerLast: 9, Proto: SCTP}},
	}
	for _, tt := range tests {
		got, err := ParseExpose(tt.in)
		if err != nil || len(got) != 1 || got[0] != tt.want {
			t.Errorf("ParseExpose(%q) = %+v, %v; want [%+v]", tt.in, got, err, tt.want)
		}
	}
}

func TestParseExposeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `invalid expose spec "": empty value`},
		{"0", `invalid expose spec "0": port 0 out of range 1-65535`},
		{"70000/udp", `invalid expose spec "70000/udp": port 70000 out of range 1-65535`},
		{"90-80", `invalid expose spec "90-80": reversed port range 90-80`},
		{"80/ip", `invalid expose spec "80/ip": unknown protocol "ip" (want tcp, udp or sctp)`},
		{"8080:80", `invalid expose spec "8080:80": expose takes container ports only; use -p to choose a host port or IP`},
		{"x", `invalid expose spec "x": bad port "x"`},
	}
	for _, tt := range tests {
		_, err := ParseExpose(tt.in)
		if err == nil || err.Error() != tt.want || errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("ParseExpose(%q) error = %v, want invalid %q", tt.in, err, tt.want)
		}
	}
}

// ContainerPorts yields a spec's container ports in order, up to 65535
// without wrapping, and stops when asked.
func TestContainerPorts(t *testing.T) {
	if got := slices.Collect(Spec{ContainerFirst: 65533, ContainerLast: 65535}.ContainerPorts()); !slices.Equal(got, []uint16{65533, 65534, 65535}) {
		t.Errorf("ContainerPorts 65533-65535 = %v", got)
	}
	for p := range (Spec{ContainerFirst: 80, ContainerLast: 90}).ContainerPorts() {
		if p != 80 {
			t.Fatalf("yielded %d after the loop stopped", p)
		}
		break
	}
}
