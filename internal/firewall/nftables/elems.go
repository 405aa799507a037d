package nftables

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	nft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Looking up single elements. google/nftables reads a set only whole (a
// dump of every element), so that the cost of adding or removing one port
// or link would grow with every other one in the maps. The kernel also
// answers for one key (nf_tables_getsetelem without NLM_F_DUMP): what
// `nft get element` asks. Its maps and sets have exact keys (no interval
// flag, see mapDef.set and addrPortSet.set), so a key names one element.

// elemConn is a netlink socket for element lookups, beside the nft.Conn
// of a call (whose socket the library keeps to itself).
type elemConn struct {
	nl *netlink.Conn
}

// elemConn opens a lookup socket in the firewall's namespace.
func (f *Firewall) elemConn() (*elemConn, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: f.nsFd})
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	return &elemConn{nl: nl}, nil
}

func (c *elemConn) Close() error { return c.nl.Close() }

// getElemType is the message of a single element's lookup, and
// newElemType that of the kernel's answer.
const (
	getElemType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM)
	newElemType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM)
)

// get looks up the element of knit's set (or map) with key: its key, value
// (for a map) and comment. A missing element, set or table is found
// false, not an error.
//
// Equivalent to: nft get element inet knit SET { KEY } (bridge knit for
// the source sets)
func (c *elemConn) get(set string, key []byte) (nft.SetElement, bool, error) {
	defer traceRead("get " + set)
	fail := func(err error) (nft.SetElement, bool, error) {
		return nft.SetElement{}, false, fmt.Errorf("get element of set %s: %w", set, err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, tableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return fail(err)
	}
	req, err := c.nl.Send(netlink.Message{
		Header: netlink.Header{Type: getElemType, Flags: netlink.Request | netlink.Acknowledge},
		// nfgenmsg: family, version, resource id
		Data: append([]byte{byte(setTable(set).Family), unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return fail(err)
	}
	// The answer is one NEWSETELEM message, then the acknowledgement; or
	// only an error, which Receive returns.
	var elem nft.SetElement
	found := false
	for {
		msgs, err := c.nl.Receive()
		if errors.Is(err, unix.ENOENT) {
			return nft.SetElement{}, false, nil
		}
		if err != nil {
			return fail(err)
		}
		for _, m := range msgs {
			if m.Header.Sequence != req.Header.Sequence {
				continue // not ours: nothing else is sent on this socket
			}
			switch m.Header.Type {
			case netlink.Error: // the acknowledgement (errors were returned above)
				return elem, found, nil
			case newElemType:
				if elem, err = elemFromMsg(m.Data); err != nil {
					return fail(err)
				}
				found = true
			}
		}
	}
}

// elemFromMsg decodes the first element of a NEWSETELEM message: an
// nfgenmsg, then the table, the set and the list of elements.
func elemFromMsg(data []byte) (nft.SetElement, error) {
	var e nft.SetElement
	if len(data) < 4 {
		return e, errors.New("short set element message")
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return e, err
	}
	ad.ByteOrder = binary.BigEndian
	found := false
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(nd *netlink.AttributeDecoder) error {
			for !found && nd.Next() {
				if nd.Type() == unix.NFTA_LIST_ELEM {
					found = true
					nd.Nested(func(ed *netlink.AttributeDecoder) error {
						return decodeElem(ed, &e)
					})
				}
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return e, fmt.Errorf("decode set element: %w", err)
	}
	if !found {
		return e, errors.New("set element message without an element")
	}
	return e, nil
}

// decodeElem reads the attributes of one element: key, data and comment.
func decodeElem(ad *netlink.AttributeDecoder, e *nft.SetElement) error {
	value := func(dst *[]byte) func(*netlink.AttributeDecoder) error {
		return func(vd *netlink.AttributeDecoder) error {
			for vd.Next() {
				if vd.Type() == unix.NFTA_DATA_VALUE {
					*dst = vd.Bytes()
				}
			}
			return nil
		}
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_ELEM_KEY:
			ad.Nested(value(&e.Key))
		case unix.NFTA_SET_ELEM_DATA:
			ad.Nested(value(&e.Val))
		case unix.NFTA_SET_ELEM_USERDATA:
			e.Comment = udataComment(ad.Bytes())
		}
	}
	return nil
}

// udataComment returns the comment of an element's user data: type-length-
// value records, the comment (NFTNL_UDATA_SET_ELEM_COMMENT, 0) a string
// ending in NUL.
func udataComment(b []byte) string {
	for len(b) >= 2 {
		typ, n := b[0], int(b[1])
		if len(b) < 2+n {
			return ""
		}
		if typ == 0 {
			s, _ := bytes.CutSuffix(b[2:2+n], []byte{0})
			return string(s)
		}
		b = b[2+n:]
	}
	return ""
}

// readTrace, set by tests only, is told of each read a call makes
// ("chains", "rules CHAIN", "sets", "dump SET", "get SET"), once it is
// answered.
var readTrace func(req string)

func traceRead(req string) {
	if readTrace != nil {
		readTrace(req)
	}
}
