package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	nft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// The kernel numbers every committed change of any nftables table in a
// namespace (the ruleset generation). What was seen up to date at
// generation G is still up to date while the generation is G, so a call
// asks for the generation (one small message) instead of reading knit's
// chains, rules and sets again (~0.7 ms):
//
//   - EnsureNetwork records "the base and network N were up to date at G"
//     after a read that found them so and during which G did not move; a
//     repair records nothing (the next call reads and records).
//   - A batch of elements (publish, unpublish, link) sent while the record
//     held is the only change if the generation afterwards is exactly G+1:
//     the record moves to G+1. Anything else that committed in between
//     (another tool, `nft flush ruleset`) makes it G+2 or more, and the
//     next call reads everything again.
//
// With WithStamp the record lives in a file, so that every knit command (a
// process of its own) profits from the ones before it. The file names the
// boot and the namespace (by its cookie): after a reboot, and in another
// namespace, the kernel counts generations from the start again. Every
// write replaces the file whole, and a batch that fails on the record's
// word drops it.

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

// verified is what was last seen up to date: knit's base, and the networks
// named (by a fingerprint of what their rules are made from), at
// generation gen of the namespace netns (its cookie), during boot boot.
// base is the start of baseDigest, in the stamp file: a knit whose base
// differs (an upgrade that adds to it) does not trust another's record.
type verified struct {
	boot  string
	netns uint64
	gen   uint32
	base  string
	nets  map[string]string
}

// bootID names this boot of the kernel.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// WithStamp keeps the record of what was seen up to date in the file at
// path (see above), shared by every Firewall given the same path.
func WithStamp(path string) Option { return func(f *Firewall) { f.stamp = path } }

// fingerprint identifies the rules this knit wants for network n and its
// base: the network's settings and the rules and sets made of them, so
// that a knit whose rules differ (an upgrade) does not take another's
// record for its own.
func fingerprint(n firewall.Network) string {
	b, _ := json.Marshal(n)
	if fp, ok := fingerprints.Load(string(b)); ok {
		return fp.(string)
	}
	h := sha256.New()
	h.Write(b)
	for _, k := range ruleKeys(networkRules(n)) {
		fmt.Fprintln(h, k)
	}
	fmt.Fprintln(h, baseDigest())
	fp := hex.EncodeToString(h.Sum(nil)[:8])
	if fingerprintsLen.Add(1) > 1024 { // a long-lived process's old settings
		fingerprints.Clear()
		fingerprintsLen.Store(0)
	}
	fingerprints.Store(string(b), fp)
	return fp
}

// fingerprints caches fingerprint by the network's settings (JSON): making
// the wanted rules is most of a verified EnsureNetwork's CPU time, and a
// process that runs many containers asks for the same few networks.
var (
	fingerprints    sync.Map // string → string
	fingerprintsLen atomic.Int64
)

// baseDigest identifies knit's base: its shared rules and its sets.
var baseDigest = sync.OnceValue(func() string {
	h := sha256.New()
	base := baseRules()
	for _, chain := range slices.Sorted(maps.Keys(base)) {
		for _, k := range ruleKeys(base[chain]) {
			fmt.Fprintln(h, k)
		}
	}
	for _, st := range wantSets() {
		fmt.Fprintln(h, st.Name, st.KeyType.Name, st.DataType.Name, st.IsMap, st.Concatenation, st.Interval)
	}
	return hex.EncodeToString(h.Sum(nil))
})

// netnsID identifies the namespace the firewall acts in for as long as the
// kernel runs: its cookie (SO_NETNS_COOKIE of the call's socket, never
// reused). Kernels before 5.14 have none, and an inode number is reused
// by the next namespace, whose generations count from 1 again: there the
// stamp file is neither read nor written, and only a process's own record
// counts.
func (f *Firewall) netnsID(ec *elemConn) (uint64, error) {
	rc, err := ec.nl.SyscallConn()
	if err != nil {
		return 0, err
	}
	var id uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) { id, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE) }); err != nil {
		return 0, err
	}
	return id, gerr
}

// loadVerified returns the record if it is of generation now: this
// process's own, or else the stamp file's.
func (f *Firewall) loadVerified(ec *elemConn, now uint32) (verified, bool) {
	f.genMu.Lock()
	v, ok := f.mem, f.memOK && f.mem.gen == now
	f.genMu.Unlock()
	if ok || f.stamp == "" {
		return v, ok
	}
	id, err := f.netnsID(ec)
	if err != nil || bootID() == "" {
		return verified{}, false
	}
	b, err := os.ReadFile(f.stamp)
	if err != nil {
		return verified{}, false
	}
	v, err = parseStamp(string(b))
	return v, err == nil && v.netns == id && v.boot == bootID() && v.gen == now && v.base == baseDigest()[:16]
}

// saveVerified replaces the record. A stamp that cannot be written only
// costs later calls a read.
func (f *Firewall) saveVerified(ec *elemConn, v verified) {
	f.genMu.Lock()
	f.mem, f.memOK = v, true
	f.genMu.Unlock()
	if f.stamp == "" {
		return
	}
	id, err := f.netnsID(ec)
	if err != nil || bootID() == "" {
		return
	}
	v.netns, v.boot, v.base = id, bootID(), baseDigest()[:16]
	tmp := f.stamp + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.MkdirAll(filepath.Dir(f.stamp), 0o755); err != nil {
		return
	}
	if err := os.WriteFile(tmp, []byte(v.String()), 0o600); err != nil {
		return
	}
	if err := os.Rename(tmp, f.stamp); err != nil {
		_ = os.Remove(tmp)
	}
}

// forgetVerified drops the record: a batch sent on its word failed, so
// what it said may not hold (it cannot tell a namespace that reused an
// identity, say); the next call reads and repairs.
func (f *Firewall) forgetVerified() {
	f.genMu.Lock()
	f.memOK = false
	f.genMu.Unlock()
	if f.stamp != "" {
		_ = os.Remove(f.stamp)
	}
}

// String renders the stamp file: "boot ID netns INO gen G base DIGEST" and
// one "net NAME FP" per network.
func (v verified) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "boot %s netns %d gen %d base %s\n", v.boot, v.netns, v.gen, v.base)
	for _, name := range slices.Sorted(maps.Keys(v.nets)) {
		fmt.Fprintf(&b, "net %s %s\n", name, v.nets[name])
	}
	return b.String()
}

func parseStamp(s string) (verified, error) {
	v := verified{nets: map[string]string{}}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if _, err := fmt.Sscanf(lines[0], "boot %s netns %d gen %d base %s", &v.boot, &v.netns, &v.gen, &v.base); err != nil {
		return verified{}, fmt.Errorf("stamp: %w", err)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "net" {
			return verified{}, fmt.Errorf("stamp: bad line %q", l)
		}
		v.nets[f[1]] = f[2]
	}
	return v, nil
}

// networkStill reports whether network n (and the base) were seen up to
// date at the current generation.
func (f *Firewall) networkStill(ec *elemConn, n firewall.Network) bool {
	now, err := ec.gen()
	if err != nil {
		return false
	}
	v, ok := f.loadVerified(ec, now)
	return ok && v.nets[n.Name] == fingerprint(n)
}

// rememberNetwork records that the base and n were up to date at g, with
// the networks already recorded at g.
func (f *Firewall) rememberNetwork(ec *elemConn, g uint32, n firewall.Network) {
	nets := map[string]string{}
	if v, ok := f.loadVerified(ec, g); ok {
		maps.Copy(nets, v.nets)
	}
	nets[n.Name] = fingerprint(n)
	f.saveVerified(ec, verified{gen: g, nets: nets})
}

// baseStill returns the record when the ruleset is still at its
// generation: knit's base is up to date.
func (f *Firewall) baseStill(ec *elemConn) (verified, bool) {
	now, err := ec.gen()
	if err != nil {
		return verified{}, false
	}
	return f.loadVerified(ec, now)
}

// advance moves the record v past one batch of this Firewall's, when that
// batch was the only change since v.
func (f *Firewall) advance(ec *elemConn, v verified) {
	if now, err := ec.gen(); err == nil && now == v.gen+1 {
		v.gen = now
		f.saveVerified(ec, v)
	}
}
