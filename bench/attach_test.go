// Package bench measures knit's costs with Go's benchmark harness. The
// benchmarks need root; each re-executes itself in a private network and
// mount namespace, so nothing touches the machine's own network.
//
//	sudo go test -run '^$' -bench . -benchtime 200x ./bench/
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/driver/bridge"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store/bolt"
	"github.com/knit-dev/knit/internal/testutil"
)

// TestMain re-executes the benchmark binary under unshare so that bridges
// and veths are made in a throwaway network namespace.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == runner.InitArg {
		runner.Init()
	}
	if code, reran := testutil.Sandboxed(); reran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// newEngine returns an engine over private directories in the sandbox.
func newEngine(b *testing.B) *engine.Engine {
	b.Helper()
	if !testutil.InSandbox() {
		b.Skip("needs root: the benchmark makes bridges and veths in a private namespace")
	}
	dir := b.TempDir()
	p := engine.Paths{
		DataRoot:   filepath.Join(dir, "lib"),
		ExecRoot:   filepath.Join(dir, "run"),
		Config:     filepath.Join(dir, "config.json"),
		NetnsLinks: filepath.Join(dir, "netns-links"),
	}
	cfg, err := config.Load(p.Config)
	if err != nil {
		b.Fatal(err)
	}
	fw := nftables.New(nftables.WithStamp(p.FirewallStamp())) // in the benchmark's private namespace, as cmd/knit
	e, err := engine.New(engine.Options{
		Paths: p, Config: cfg, Store: bolt.Open(filepath.Join(p.DataRoot, "knit.db")),
		Drivers:  map[string]driver.Driver{"bridge": bridge.New()},
		Firewall: fw,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		all, _ := e.Containers()
		for _, c := range all {
			_ = e.Remove(c.ID, engine.RemoveOptions{Force: true})
		}
		// The exec-root is a tmpfs knit mounted; undo it so the temporary
		// directory can go.
		_ = unix.Unmount(p.ExecRoot, unix.MNT_DETACH)
	})
	return e
}

var opts = engine.RunOptions{Args: []string{"true"}}

// fill attaches n containers to the default network.
func fill(b *testing.B, e *engine.Engine, n int) {
	for range n {
		if _, err := e.Create(opts); err != nil {
			b.Fatal(err)
		}
	}
}

// latencies collects one duration per iteration and reports percentiles:
// the mean that Go prints is skewed by the kernel's background work (a
// deleted namespace's veth is destroyed asynchronously), so p50 is the
// figure to compare.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	slices.Sort(l)
	pct := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(1), "max-ms")
}

// withoutGC runs the timed loop of a benchmark with the garbage collector
// off, after a collection: as in a knit command's fresh process, which
// never lives long enough to collect, where in this long-lived one an
// iteration in ~20 would share its CPUs with a collection. An iteration
// leaves ~0.2 MB of garbage.
func withoutGC(b *testing.B, loop func()) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	b.ResetTimer()
	loop()
}

// BenchmarkAttach times making one container's network (record, namespace,
// veth pair on the bridge, address, routes, /etc files) when `existing`
// containers are already attached to the same network: the iterations
// attach containers number existing+1, existing+2, ... and keep them.
func BenchmarkAttach(b *testing.B) {
	for _, existing := range []int{0, 99, 999} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			e := newEngine(b)
			fill(b, e, existing)
			lat := make(latencies, 0, b.N)
			withoutGC(b, func() {
				for range b.N {
					t0 := time.Now()
					if _, err := e.Create(opts); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
			})
			lat.report(b)
		})
	}
}

// BenchmarkDetach times releasing one container's network when `existing`
// other containers stay attached: b.N extra containers are attached first,
// then removed one by one, newest first.
func BenchmarkDetach(b *testing.B) {
	for _, existing := range []int{0, 99, 999} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			e := newEngine(b)
			fill(b, e, existing)
			ids := make([]string, b.N)
			for i := range ids {
				c, err := e.Create(opts)
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = c.ID
			}
			lat := make(latencies, 0, b.N)
			withoutGC(b, func() {
				for i := range b.N {
					t0 := time.Now()
					if err := e.Remove(ids[b.N-1-i], engine.RemoveOptions{}); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
			})
			lat.report(b)
		})
	}
}
