package runner

import (
	"path/filepath"
	"reflect"
	"testing"
)

func TestResolveUser(t *testing.T) {
	etc := t.TempDir()
	write(t, filepath.Join(etc, "passwd"), "root:x:0:0:root:/root:/bin/sh\n"+
		"# a comment\n"+
		"app:x:1000:1000:App:/home/app:/bin/sh\n"+
		"www:x:33:33::/var/www:/bin/false\n"+
		"1001:x:1002:1002::/home/numeric:/bin/sh\n")
	write(t, filepath.Join(etc, "group"), "root:x:0:\n"+
		"app:x:1000:\n"+
		"audio:x:29:app,www\n"+
		"video:x:44:www,app\n"+
		"staff:x:50:\n")
	for _, tc := range []struct {
		spec string
		want execUser
	}{
		{"", execUser{Home: "/root"}},
		{"root", execUser{Home: "/root"}},
		{"app", execUser{Uid: 1000, Gid: 1000, Groups: []uint32{29, 44}, Home: "/home/app"}},
		{"1000", execUser{Uid: 1000, Gid: 1000, Groups: []uint32{29, 44}, Home: "/home/app"}},
		// A group given: that group alone, as moby/sys/user.
		{"app:staff", execUser{Uid: 1000, Gid: 50, Home: "/home/app"}},
		{"app:29", execUser{Uid: 1000, Gid: 29, Home: "/home/app"}},
		{"www:7", execUser{Uid: 33, Gid: 7, Home: "/var/www"}},
		{"4242", execUser{Uid: 4242, Home: "/"}}, // not in passwd: group 0, home /
		{"4242:4343", execUser{Uid: 4242, Gid: 4343, Home: "/"}},
		{"1001", execUser{Uid: 1001, Home: "/"}}, // a UID, not the user named 1001
	} {
		got, err := resolveUserIn(etc, tc.spec)
		if err != nil || !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("resolveUser(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, bad := range []string{"nobody", "app:nogroup", ":0", "app:", "a:b:c"} {
		if u, err := resolveUserIn(etc, bad); err == nil {
			t.Errorf("resolveUser(%q) = %+v, want an error", bad, u)
		}
	}
	// No passwd at all (a bare rootfs): numeric users and root still work.
	empty := t.TempDir()
	if u, err := resolveUserIn(empty, "500:500"); err != nil || u.Uid != 500 || u.Gid != 500 {
		t.Errorf("numeric user without passwd: %+v, %v", u, err)
	}
	for _, root := range []string{"", "root", "0", "root:root", "0:root", "root:0"} {
		if u, err := resolveUserIn(empty, root); err != nil || u.Uid != 0 || u.Home != "/root" {
			t.Errorf("%q without passwd: %+v, %v", root, u, err)
		}
	}
	if _, err := resolveUserIn(empty, "app"); err == nil {
		t.Error("a name without passwd: no error")
	}
}

// --group-add's groups join the user's, by name or GID, looked up in
// /etc/group; root without them keeps its credentials as they are.
func TestLookupGroup(t *testing.T) {
	etc := t.TempDir()
	write(t, filepath.Join(etc, "group"), "root:x:0:\naudio:x:29:\n")
	for in, want := range map[string]uint32{"audio": 29, "29": 29, "4000": 4000, "root": 0} {
		if got, err := lookupGroup(etc, in); err != nil || got != want {
			t.Errorf("lookupGroup(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := lookupGroup(etc, "video"); err == nil {
		t.Error("an unknown group name: no error")
	}
}

func TestWithHome(t *testing.T) {
	if got := withHome([]string{"A=1"}, "/home/a"); !reflect.DeepEqual(got, []string{"A=1", "HOME=/home/a"}) {
		t.Errorf("withHome = %q", got)
	}
	if got := withHome([]string{"HOME=/x"}, "/home/a"); !reflect.DeepEqual(got, []string{"HOME=/x"}) {
		t.Errorf("withHome keeps a given HOME: %q", got)
	}
}
