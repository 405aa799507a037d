package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// execUser is who a command runs as: docker run -u NAME|UID[:GROUP|GID],
// resolved against the container's own /etc/passwd and /etc/group.
type execUser struct {
	Uid, Gid uint32
	Groups   []uint32 // supplementary: the groups that list the user by name
	Home     string
}

// credential is the user as os/exec takes it.
func (u *execUser) credential() *syscall.Credential {
	return &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
}

// ValidUser checks the shape of a --user value: NAME or UID, then
// optionally :GROUP or :GID, none of them empty.
func ValidUser(spec string) error {
	user, group, hasGroup := strings.Cut(spec, ":")
	if user == "" || hasGroup && (group == "" || strings.Contains(group, ":")) {
		return fmt.Errorf("invalid user %q: want NAME|UID[:GROUP|GID]", spec)
	}
	return nil
}

// errNoEntry is a user name missing from passwd.
var errNoEntry = errors.New("no matching entries in /etc/passwd")

// resolveUser is who a command runs as: spec resolved (lookupUser), root
// for "".
func resolveUser(spec string) (*execUser, error) { return resolveUserIn("/etc", spec) }

// resolveUserIn is resolveUser with the files of the directory etc.
func resolveUserIn(etc, spec string) (*execUser, error) {
	if spec == "" {
		spec = "0"
	}
	return lookupUser(etc, spec)
}

// becomeUser makes this process u before it execs the command: groups,
// group, then user (which Go applies to every thread). The kernel clears
// the parent-death signal when the credentials change, so it is set
// again: the container must still die with its supervisor.
func becomeUser(u *execUser) error {
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(u.Gid)); err != nil {
		return fmt.Errorf("setgid %d: %w", u.Gid, err)
	}
	if err := syscall.Setuid(int(u.Uid)); err != nil {
		return fmt.Errorf("setuid %d: %w", u.Uid, err)
	}
	return unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
}

// lookupUser resolves spec in the files of the root we run in now (the
// container's), as Docker does: a numeric user need not be in passwd (its
// group is then 0 and its home /), a name must be; a group given replaces
// the user's own, and only a user found by name gets supplementary groups.
func lookupUser(etc, spec string) (*execUser, error) {
	if err := ValidUser(spec); err != nil {
		return nil, err
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	u := &execUser{Home: "/"}
	uid, numeric := parseID(name)
	entry, err := findNameOrID(etc+"/passwd", name, 6)
	switch {
	case err != nil:
		return nil, err
	case entry != nil:
		id, _ := parseID(entry[2])
		gid, _ := parseID(entry[3])
		u.Uid, u.Gid, u.Home = id, gid, entry[5]
		name = entry[0]
	case numeric, name == "root": // root needs no entry (a bare rootfs has no passwd)
		u.Uid, name = uid, ""
		if u.Uid == 0 {
			u.Home = "/root"
		}
	default:
		return nil, fmt.Errorf("unable to find user %s: %w", name, errNoEntry)
	}
	if hasGroup {
		if u.Gid, err = lookupGroup(etc, group); err != nil {
			return nil, err
		}
	}
	// Supplementary groups come with the implicit form only, as in
	// moby/sys/user: -u alice:staff gets staff, not alice's other groups.
	if name != "" && !hasGroup {
		err := eachEntry(etc+"/group", func(f []string) {
			if len(f) < 4 {
				return
			}
			for m := range strings.SplitSeq(f[3], ",") {
				if gid, ok := parseID(f[2]); ok && m == name && gid != u.Gid {
					u.Groups = append(u.Groups, gid)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return u, nil
}

// lookupGroup resolves a group name or GID in etc/group; a number is
// always a GID and need not be listed.
func lookupGroup(etc, group string) (uint32, error) {
	gid, numeric := parseID(group)
	g, err := findNameOrID(etc+"/group", group, 3)
	switch {
	case err != nil:
		return 0, err
	case g != nil:
		gid, _ = parseID(g[2])
		return gid, nil
	case numeric, group == "root":
		return gid, nil // root's is 0 even without an entry
	}
	return 0, fmt.Errorf("unable to find group %s: no matching entries in /etc/group", group)
}

// userOf is who s's command runs as: s.User with s.GroupAdd's groups
// added; change reports whether the process must change credentials (not
// for root whose groups are already the ones it gets).
func userOf(s *Spec) (u *execUser, change bool, err error) {
	if u, err = resolveUser(s.User); err != nil {
		return nil, false, err
	}
	for _, g := range s.GroupAdd {
		gid, err := lookupGroup("/etc", g)
		if err != nil {
			return nil, false, err
		}
		if gid != u.Gid && !slices.Contains(u.Groups, gid) {
			u.Groups = append(u.Groups, gid)
		}
	}
	change = s.User != "" || len(s.GroupAdd) > 0
	if !change {
		// Root, as Docker's: its supplementary groups are those the
		// container's /etc/group gives it, not those of knit's caller.
		cur, err := unix.Getgroups()
		change = err != nil || !sameGroups(cur, u.Groups)
	}
	return u, change, nil
}

// sameGroups reports whether two lists hold the same group IDs.
func sameGroups(have []int, want []uint32) bool {
	set := map[uint32]bool{}
	for _, g := range want {
		set[g] = true
	}
	for _, g := range have {
		if !set[uint32(g)] {
			return false
		}
	}
	return len(set) == len(slices.Compact(slices.Sorted(slices.Values(have))))
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// findNameOrID returns the fields of the line of passwd or group file
// path, of n fields at least, that names ref: a number is always an ID
// (the third field), as in Docker (moby/sys/user), anything else a name
// (the first).
func findNameOrID(path, ref string, n int) ([]string, error) {
	id, numeric := parseID(ref)
	return findEntry(path, func(f []string) bool {
		if len(f) < n {
			return false
		}
		if numeric {
			got, ok := parseID(f[2])
			return ok && got == id
		}
		return f[0] == ref
	})
}

// findEntry returns the fields of the first line of the colon-separated
// file path that match (nil if none, or if there is no such file).
func findEntry(path string, match func([]string) bool) ([]string, error) {
	var found []string
	err := eachEntry(path, func(f []string) {
		if found == nil && match(f) {
			found = f
		}
	})
	return found, err
}

// eachEntry calls fn with the fields of every line of path but comments;
// a missing file has none.
func eachEntry(path string, fn func([]string)) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	return readEntries(f, fn)
}

func readEntries(r io.Reader, fn func([]string)) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	return sc.Err()
}

// giveStdio hands the container's standard streams that knit made to u,
// as runc does, so that a user other than root can open /dev/stdout
// (/proc/self/fd/1 checks the pipe's or the terminal's own owner and
// mode): knit's pipes among them (own) and the terminal knit allocated
// (tty). A caller's own descriptors, a foreground run's stdin or --rm
// streams, are never changed.
func giveStdio(u *execUser, own []int, tty bool) error {
	for fd := range 3 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			continue // closed
		}
		fifo := st.Mode&unix.S_IFMT == unix.S_IFIFO
		if (fifo && slices.Contains(own, fd)) || (tty && st.Mode&unix.S_IFMT == unix.S_IFCHR && isTerminalFd(fd)) {
			if err := unix.Fchown(fd, int(u.Uid), int(u.Gid)); err != nil {
				return fmt.Errorf("give fd %d to user %d: %w", fd, u.Uid, err)
			}
		}
	}
	return nil
}

// withHome adds HOME=home to env unless it sets HOME already, as Docker
// does for the user a command runs as.
func withHome(env []string, home string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "HOME=") {
			return env
		}
	}
	return append(env, "HOME="+home)
}
