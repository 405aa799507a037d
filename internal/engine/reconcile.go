package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/knit-dev/knit/internal/dns/server"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Exit codes recorded when knit, not the command, decided the end.
const (
	exitKilled  = 137 // 128 + SIGKILL: we had to kill a process left behind
	exitUnknown = 255 // the supervisor died and took the real status with it
)

// Reconcile repairs what crashed processes left behind: a container whose
// supervisor (or, while being created, whose creator) is gone has its
// process killed and its network released, exactly as if it had exited;
// a `network connect` whose process is gone is undone (or, at its DNS
// stage, finished), and a `network disconnect` finished.
// It reads only the live index and asks the kernel about each responsible
// PID (exists), so it costs well under a millisecond even with a thousand
// containers; then it restarts the DNS server if it is wanted and gone
// (ensureDNSServer: a stat, and a flock probe while it is wanted). A PID reused by an unrelated process passes that
// test; ReconcileStrict also compares start times.
func (e *Engine) Reconcile() error { return e.reconcile(false) }

// ReconcileStrict is Reconcile with a start-time check of every PID, for
// commands that read every container anyway (ps, prune).
func (e *Engine) ReconcileStrict() error { return e.reconcile(true) }

func (e *Engine) reconcile(strict bool) error {
	var d dead
	rebooted := false
	schema := 0
	err := e.st.View(func(tx store.Tx) (err error) {
		if schema, err = storeSchema(tx); err != nil {
			return err
		}
		rebooted = bootChanged(tx)
		d, err = findDead(tx, strict || rebooted, rebooted)
		return err
	})
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if schema != currentSchema {
		if err := e.st.Update(ensureSchema); err != nil {
			return err
		}
	}
	later, err := e.repairDead(d)
	if err != nil {
		return err
	}
	e.ensureDNSServer()
	if !rebooted || later {
		// A record given back to its dead owner of the last boot is not
		// done with: until it is, every check reads the boot of each
		// record (a PID of this boot may match the old one's).
		return nil
	}
	// Every process of the old boot is repaired: from now on the quick
	// check will do.
	return e.st.Update(noteBoot)
}

// currentSchema is the version of the store's layout this knit writes:
//
//	0  (no meta/schema key) knit before the version was recorded
//	1  joins/ also lists containers being set up; linkedby/ exists
const currentSchema = 1

// storeSchema reads the store's layout version (0 when unrecorded).
func storeSchema(tx store.Tx) (int, error) {
	b, err := tx.Get(bucketMeta, "schema")
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, fmt.Errorf("meta/schema %q: %w", b, err)
	}
	return v, nil
}

// ensureSchema refuses a store of a newer layout than currentSchema, and
// brings one of an older layout up to it: every record is written again,
// which fills the indexes it feeds (joins/ and linkedby/ for the
// containers an older knit recorded), then the version.
func ensureSchema(tx store.Tx) error {
	v, err := storeSchema(tx)
	if err != nil || v == currentSchema {
		return err
	}
	if v > currentSchema {
		return errdefs.Invalid("the store was written by a newer knit (its schema %d; this knit knows %d): use that knit, or move the store aside and run `knit system prune`", v, currentSchema)
	}
	cs, err := listContainers(tx)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if err := putContainer(tx, c); err != nil {
			return err
		}
	}
	return tx.Put(bucketMeta, "schema", []byte(strconv.Itoa(currentSchema)))
}

// bootID names this boot of the kernel ("" when it cannot be read).
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// bootChanged reports whether the live index was last checked during
// another boot of the kernel: its PIDs are then all of dead processes, but
// the new boot's processes reuse them, so only the start-time check tells.
// A store from before the boot was recorded counts as changed once.
func bootChanged(tx store.Tx) bool {
	b, err := tx.Get(bucketMeta, "boot")
	return bootID() != "" && (err != nil || string(b) != bootID())
}

// noteBoot records this boot as the one the live index was checked in
// (its caller found bootChanged).
func noteBoot(tx store.Tx) error {
	return tx.Put(bucketMeta, "boot", []byte(bootID()))
}

// dead is what crashed processes left to repair: containers whose
// responsible process is gone, connects whose process is.
type dead struct{ ids, connects []string }

func (d dead) none() bool { return len(d.ids) == 0 && len(d.connects) == 0 }

// findDead reads the live index and the connects under way; strict (its
// caller's choice, and after a reboot: see bootChanged) checks every
// process's start time; rebooted also the boot of the records' processes.
func findDead(tx store.Tx, strict, rebooted bool) (d dead, err error) {
	if d.ids, err = deadOwned(tx, strict, rebooted); err != nil {
		return d, err
	}
	d.connects, err = deadConnects(tx, strict)
	return d, err
}

// deadOwned returns the containers of the live index whose responsible
// process is gone (strict: or is another process with the same PID).
// After a reboot, the entries whose process looks alive are checked against
// the boot in their record too (the index holds no boot): one record read
// each, until a reconcile finds nothing dead and notes the boot.
func deadOwned(tx store.Tx, strict, rebooted bool) ([]string, error) {
	var suspects []string
	seen := map[Proc]bool{} // one check per process: an owner may hold many
	var last []byte         // the previous entry's owner, and whether it lives
	lastOK := false
	// Scan, not List: no copy of each of the (maybe thousands of)
	// entries; consecutive entries of one owner are decided once.
	err := tx.Scan(bucketLive, func(id, v []byte) error {
		if last == nil || !bytes.Equal(v, last) {
			p, ok := parseProc(v)
			ok = ok && p.Pid > 0
			if ok {
				live, checked := seen[p]
				if !checked {
					live = exists(p.Pid) && (!strict || alive(p))
					seen[p] = live
				}
				ok = live
			}
			last, lastOK = append(last[:0], v...), ok
		}
		// The boot is each record's own: a record of the last boot and
		// one of this boot may give the same PID and start time.
		if !lastOK || rebooted && !recordedThisBoot(tx, string(id)) {
			suspects = append(suspects, string(id))
		}
		return nil
	})
	return suspects, err
}

// repairDead undoes the connects and repairs the containers whose process
// is gone, each on its own: the connects first (a container's repair
// releases all its endpoints anyway).
func (e *Engine) repairDead(d dead) (later bool, err error) {
	var errs []error
	for _, k := range d.connects {
		errs = append(errs, e.repairConnect(k))
	}
	for _, id := range d.ids {
		err := e.repair(id)
		if errors.Is(err, errRetryLater) {
			later = true
			continue
		}
		errs = append(errs, err)
	}
	return later, errors.Join(errs...)
}

// errRetryLater is repair's when it gave a record back to its dead owner
// for the next command to retry: no failure of the command's.
var errRetryLater = errors.New("left for the next command to repair")

// repair tears down one container whose responsible process is gone.
//
// It claims the container first, in the transaction that confirms it is
// orphaned: a supervisor that comes to life in between (start checks the
// owner) then finds it taken instead of running unrecorded.
func (e *Engine) repair(id string) error {
	var c *Container
	var dead Proc // the owner this repair takes over from
	var deadClaimed bool
	err := e.st.Update(func(tx store.Tx) (err error) {
		if c, err = getContainer(tx, id); errors.Is(err, store.ErrNotFound) {
			return tx.Delete(bucketLive, id)
		} else if err != nil || !orphaned(c) {
			c = nil
			return err
		}
		if c.State.Status == StatusCreated {
			dead, deadClaimed = c.State.Owner, c.State.Claimed
			c.State.Owner, c.State.Claimed = selfProc(), true
			return putContainer(tx, c)
		}
		return nil
	})
	if err != nil || c == nil {
		return err
	}
	code := exitUnknown
	if killProc(c.State.Process) {
		code = exitKilled
	}
	if c.State.Status == StatusCreated {
		// Never started: undo the half-made run. If its kernel state
		// cannot be undone now, the claim is given back, so that the
		// record is not tied to this process (a foreground run, an exec:
		// it may live for days) but left for the next command to retry.
		if err := e.destroy(c); err != nil {
			// Back to the dead owner: the live index names it again, so
			// the next command's reconcile finds the record and retries.
			_ = e.st.Update(func(tx store.Tx) error {
				cur, err := getContainer(tx, id)
				if err != nil || !cur.State.Owner.is(selfProc()) {
					return err
				}
				cur.State.Owner, cur.State.Claimed = dead, deadClaimed
				return putContainer(tx, cur)
			})
			return errRetryLater
		}
		return nil
	}
	if err := e.finish(c.ID, code); err != nil {
		return fmt.Errorf("repair %s: %w", c.Name, err)
	}
	return nil
}

// recordedThisBoot reports whether container id's record gives its
// responsible process (the one the live index holds) this boot, or no
// boot. A record that cannot be read counts as this boot's: repair reads
// it again.
func recordedThisBoot(tx store.Tx, id string) bool {
	c, err := getContainer(tx, id)
	if err != nil {
		return true
	}
	switch c.State.Status {
	case StatusCreated:
		return c.State.Owner.thisBoot()
	case StatusRunning:
		return c.State.Supervisor.thisBoot()
	}
	return true
}

func orphaned(c *Container) bool {
	switch c.State.Status {
	case StatusRunning:
		return !alive(c.State.Supervisor)
	case StatusCreated:
		return !alive(c.State.Owner)
	}
	return false
}

// exists reports whether a process with this PID exists (maybe a zombie, or
// another process that reused the PID). It asks getpriority, which only looks
// the PID up, rather than kill(pid, 0), which also checks the right to signal
// (the target's credentials, audit): 0.5 against 0.8 ms for 900 supervisors
// whose task structures are not in the cache.
func exists(pid int) bool {
	_, err := syscall.Getpriority(syscall.PRIO_PROCESS, pid)
	return err == nil
}

// alive reports whether p is still the process recorded.
func alive(p Proc) bool { return p.Pid > 0 && p.thisBoot() && runner.Alive(p.Pid, p.Start) }

// killProc sends SIGKILL to p if it is still the process we started; it
// reports whether it did.
func killProc(p Proc) bool {
	h, ok := openProc(p)
	if !ok {
		return false
	}
	defer h.Close()
	return h.Signal(syscall.SIGKILL) == nil
}

// openProc opens p if it is still the process recorded (runner.Open).
func openProc(p Proc) (*runner.Handle, bool) {
	if !p.thisBoot() {
		return nil, false
	}
	return runner.Open(p.Pid, p.Start)
}

// ensureDNSServer starts the DNS server again if its records need one and
// it is gone (killed, out of memory): every command mends that, not only
// the next one to change a record. A failure is reported, not returned:
// the command itself may not need the server.
func (e *Engine) ensureDNSServer() {
	dir := e.dnsDir()
	if !server.Wanted(dir) || server.Running(dir) {
		return
	}
	if err := e.syncDNS(); err != nil {
		fmt.Fprintf(os.Stderr, "knit: restart the embedded DNS server: %v\n", err)
	}
}
