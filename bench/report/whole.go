package main

import (
	"fmt"
	"slices"
	"strings"
)

// wholeCommands writes what the columns "knit-cli" and "docker" time, if
// the run has them: whole commands as a user types them, unlike the
// columns above them, which time the network alone.
func wholeCommands(b *strings.Builder, d *data, ts []string) {
	k, dk := slices.Contains(ts, "knit-cli"), slices.Contains(ts, "docker")
	if !k && !dk {
		return
	}
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("The last two columns are not the network alone: they time a whole command, exec'd and waited for, as a " +
		"user types it, and a whole container with it (process start of the client included). Compare them with each " +
		"other (the ratio \"docker ÷ knit, whole commands\"), not with the columns above them.\n\n")
	if k {
		w("- **%s**: `knit run -d -p HOSTPORT:80 --rootfs BUSYBOX sleep 1d`, then `knit rm -f ID`, by exec of the knit "+
			"binary built from this tree, with a data root, exec root and configuration file of its own on the sandbox's "+
			"tmpfs. Attach includes knit's process start, the container's network as in the knit column, its supervisor "+
			"and the start of `sleep` in a busybox root filesystem (a directory: no image, no layer); detach includes "+
			"killing the container and removing its network.\n", label("knit-cli"))
	}
	if dk {
		w("- **%s**: `docker run -d -p HOSTPORT:80 IMAGE sleep 1d`, then `docker rm -f ID`, by exec of Debian's docker "+
			"CLI against Debian's dockerd%s, started in the tool's sandbox with a data root, exec root, pidfile, socket "+
			"and configuration of its own (never the machine's /var/lib/docker or /run/docker.sock); IMAGE is made by "+
			"`docker import` of the same busybox tree. Attach includes the CLI's start, the API request, dockerd → "+
			"containerd → shim → runc, the container's overlay2 layer, its network on docker0 (veth, address, iptables "+
			"rules added by exec of iptables in the sandbox's namespace) and the userland proxy; detach includes "+
			"killing the container and undoing all of that. Docker keeps its default userland proxy (`userland-proxy: "+
			"true`), which is what users get: two docker-proxy processes per published port (IPv4 and IPv6), which "+
			"knit does not start. dockerd's start and the image import are not timed.\n", label("docker"), dockerVersion(d))
	}
	w("\n")
}

func dockerVersion(d *data) string {
	if v, ok := d.config["version-docker"]; ok {
		return " " + v
	}
	return ""
}

// wholeCommandsFigures says where the time of a whole `knit run -d -p`
// goes and how Docker's compares, from this run's figures at the nth
// container; "" if the run lacks them.
func wholeCommandsFigures(d *data, n int) string {
	cli, ok1 := d.p50("Attach", "knit-cli", n)
	api, ok2 := d.p50("Attach", "knit", n)
	if !ok1 || !ok2 {
		return ""
	}
	s := fmt.Sprintf("A whole `knit run -d -p` takes %s ms at the %s container, of which the knit column's attach "+
		"through the engine API (the network, its record and /etc files) takes %s ms: the rest is the knit process's start, its supervisor and the container's own process",
		ms(cli), ordinal(n), ms(api))
	if dk, ok := d.p50("Attach", "docker", n); ok {
		s += fmt.Sprintf("; a whole `docker run -d -p` takes %s ms (%s knit's)", ms(dk), ratio(dk/cli))
	}
	return s + "."
}
