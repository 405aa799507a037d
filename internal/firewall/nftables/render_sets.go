package nftables

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"golang.org/x/sys/unix"
)

// renderSet prints a set or map and its elements as nft does.
func renderSet(s *nft.Set, elems []nft.SetElement) string {
	var b strings.Builder
	kind, typ := "set", s.KeyType.Name
	if s.IsMap {
		kind, typ = "map", typ+" : "+s.DataType.Name
	}
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", s.Name, typ)
	if kind == "map" {
		b.Reset()
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s\n", s.Name, typ)
	}
	if len(elems) > 0 {
		// nft sorts elements by their whole key read as one host-order
		// (here little-endian) number.
		sorted := slices.SortedFunc(slices.Values(elems), func(a, b nft.SetElement) int {
			return bytes.Compare(sortKey(a.Key), sortKey(b.Key))
		})
		items := make([]string, len(sorted))
		for i, e := range sorted {
			items[i] = renderElem(s, e)
		}
		// nft puts IPv4 addresses two to a line, other types one
		// (its calculate_delim).
		perLine := 1
		if s.KeyType.Name == "ipv4_addr" {
			perLine = 2
		}
		var lines []string
		for len(items) > 0 {
			n := min(perLine, len(items))
			lines = append(lines, strings.Join(items[:n], ", "))
			items = items[n:]
		}
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(lines, ",\n\t\t\t     "))
	}
	b.WriteString("\t}\n")
	return b.String()
}

// sortKey makes comparing bytes compare keys as nft does: as host-order
// numbers, whose most significant byte is the last on a little-endian host.
func sortKey(key []byte) []byte {
	if binaryutil.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return key // big-endian host
	}
	r := slices.Clone(key)
	slices.Reverse(r)
	return r
}

// renderElem prints one element: KEY [comment "C"] [: VALUE].
func renderElem(s *nft.Set, e nft.SetElement) string {
	out := renderConcat(s.KeyType.Name, e.Key)
	if e.Comment != "" {
		out += fmt.Sprintf(" comment %q", e.Comment)
	}
	if s.IsMap {
		out += " : " + renderConcat(s.DataType.Name, e.Val)
	}
	return out
}

// renderConcat prints data of a (possibly concatenated) type, each field
// padded to 4 bytes as the kernel stores it.
func renderConcat(typ string, data []byte) string {
	names := strings.Split(typ, " . ")
	parts := make([]string, len(names))
	for i, name := range names {
		size := map[string]int{"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 1, "inet_service": 2, "ifname": unix.IFNAMSIZ}[name]
		if size == 0 || len(data) < size {
			return fmt.Sprintf("[%s %x]", typ, data)
		}
		parts[i] = renderField(name, data[:size])
		data = data[min(len(data), (size+3)/4*4):]
	}
	return strings.Join(parts, " . ")
}

func renderField(typ string, b []byte) string {
	switch typ {
	case "ipv4_addr", "ipv6_addr":
		a, _ := netip.AddrFromSlice(b)
		return a.String()
	case "inet_proto":
		if p, ok := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}[b[0]]; ok {
			return p
		}
		return fmt.Sprint(b[0])
	case "inet_service":
		return fmt.Sprint(binary.BigEndian.Uint16(b))
	}
	return fmt.Sprintf("%q", strings.TrimRight(string(b), "\x00"))
}
