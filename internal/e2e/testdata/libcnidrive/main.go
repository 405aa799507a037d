// Command libcnidrive drives a CNI network configuration through libcni's
// API, as a runtime linking it (containerd, CRI-O) does, for the e2e tests:
//
//	libcnidrive -confdir DIR -path DIR[:DIR] -cachedir DIR -net NAME \
//	    [-id ID] [-netns PATH] [-ifname eth0] [-caps JSON] [-valid ID/IF,...] \
//	    add|check|del|gc|status|version
//
// add prints the result JSON, version the versions the first plugin of the
// list supports; the other operations print nothing. Errors go
// to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	confDir := flag.String("confdir", "", "directory of network configurations")
	path := flag.String("path", "", "plugin directories, colon-separated")
	cacheDir := flag.String("cachedir", "", "libcni's result cache")
	netName := flag.String("net", "", "network configuration name")
	id := flag.String("id", "", "container ID")
	netns := flag.String("netns", "", "network namespace path")
	ifname := flag.String("ifname", "eth0", "interface name")
	caps := flag.String("caps", "", "capability arguments, JSON")
	valid := flag.String("valid", "", "GC: the valid attachments, ID/IFNAME,...")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: libcnidrive [flags] add|check|del|gc|status|version")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *confDir, *path, *cacheDir, *netName, *caps, *valid,
		&libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname}); err != nil {
		fmt.Fprintln(os.Stderr, "libcnidrive:", err)
		os.Exit(1)
	}
}

func run(op, confDir, path, cacheDir, netName, caps, valid string, rt *libcni.RuntimeConf) error {
	list, err := libcni.LoadNetworkConf(confDir, netName)
	if err != nil {
		return err
	}
	if caps != "" {
		if err := json.Unmarshal([]byte(caps), &rt.CapabilityArgs); err != nil {
			return fmt.Errorf("-caps: %w", err)
		}
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(path), cacheDir, nil)
	ctx := context.Background()
	switch op {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return res.Print()
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "gc":
		args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
		for _, a := range strings.Split(valid, ",") {
			if id, ifname, ok := strings.Cut(a, "/"); ok {
				args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: ifname})
			}
		}
		return cni.GCNetworkList(ctx, list, args)
	case "status":
		return cni.GetStatusNetworkList(ctx, list)
	case "version":
		info, err := cni.GetVersionInfo(ctx, list.Plugins[0].Network.Type)
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(info.SupportedVersions(), " "))
		return nil
	}
	return fmt.Errorf("unknown operation %q", op)
}
