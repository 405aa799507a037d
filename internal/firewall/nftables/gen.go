package nftables

import (
	"encoding/binary"
	"fmt"

	nft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The kernel numbers every change of any nftables table (the ruleset
// generation). A base that was seen up to date at generation G is still up
// to date while the generation is G: a run's AddPorts, which follows its
// EnsureNetwork with nothing in between, asks for the generation (one small
// message) instead of reading knit's chains, rules and sets again.

const (
	getGenType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN)
	newGenType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)
)

// gen returns the ruleset generation.
//
// Equivalent to: the number `nft monitor` prints as "# new generation N"
func (c *elemConn) gen() (uint32, error) {
	defer traceRead("gen")
	msgs, err := c.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: getGenType, Flags: netlink.Request},
		Data:   []byte{byte(nft.TableFamilyUnspecified), unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("get nftables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != newGenType || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("get nftables generation: no generation in the answer")
}

// rememberBase records that knit's base was up to date at generation g.
func (f *Firewall) rememberBase(g uint32) {
	f.genMu.Lock()
	f.baseGen, f.baseGenOK = g, true
	f.genMu.Unlock()
}

// baseStill reports whether the ruleset is still at the generation at
// which knit's base was last seen up to date.
func (f *Firewall) baseStill(ec *elemConn) bool {
	f.genMu.Lock()
	g, ok := f.baseGen, f.baseGenOK
	f.genMu.Unlock()
	if !ok {
		return false
	}
	now, err := ec.gen()
	return err == nil && now == g
}
