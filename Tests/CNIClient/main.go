// cni-client: the CNI tests' container runtime. It drives plugins through the real libcni
// (Debian's golang-github-appc-cni-dev), as containerd and CRI-O do: conflist parsing,
// VERSION negotiation, prevResult chaining, the result cache. STATUS and GC, which this
// libcni predates (CNI 1.1), go through libcni's own plugin invoker.
//
// Usage: cni-client COMMAND -conflist FILE -path DIRS [-id ID -netns PATH -ifname NAME -args K=V;...
//
//	-cache DIR -valid ID/IFNAME,... -portmap HOSTPORT:CONTAINERPORT]
//
// Prints one JSON object: {"ok":true,"result":...} or {"ok":false,"code":N,"msg":"...","details":"..."}.
// Exit status 0 when ok, 1 on a CNI error, 2 on a usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cni-client add|check|del|status|gc|version|validate [flags]")
		os.Exit(2)
	}
	command := os.Args[1]
	flags := flag.NewFlagSet(command, flag.ExitOnError)
	conflist := flags.String("conflist", "", "the network configuration list")
	path := flags.String("path", "", "plugin directories, ':'-separated")
	id := flags.String("id", "", "container id")
	netns := flags.String("netns", "", "network namespace path")
	ifname := flags.String("ifname", "eth0", "interface name")
	args := flags.String("args", "", "CNI_ARGS as K=V;K=V")
	cache := flags.String("cache", "", "libcni's result cache directory")
	valid := flags.String("valid", "", "GC: the attachments to keep, ID/IFNAME,...")
	portmap := flags.String("portmap", "", "a port mapping for portmap, HOSTPORT:CONTAINERPORT (tcp)")
	op := flags.String("op", "add", "bench: add or del")
	count := flags.Int("count", 100, "bench: pods")
	parallel := flags.Int("parallel", 1, "bench: pods at a time")
	prefix := flags.String("netns-prefix", "", "bench: pod i's network namespace is PREFIX<i>")
	flags.Parse(os.Args[2:])

	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fail(err)
	}
	dirs := strings.Split(*path, ":")
	cni := libcni.NewCNIConfigWithCacheDir(dirs, *cache, nil)
	rt := &libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname}
	for _, pair := range strings.Split(*args, ";") {
		if kv := strings.SplitN(pair, "=", 2); len(kv) == 2 {
			rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
		}
	}
	if *portmap != "" {
		var host, container int
		if _, err := fmt.Sscanf(*portmap, "%d:%d", &host, &container); err != nil {
			fail(err)
		}
		rt.CapabilityArgs = map[string]interface{}{"portMappings": []map[string]interface{}{
			{"hostPort": host, "containerPort": container, "protocol": "tcp"},
		}}
	}
	ctx := context.Background()
	switch command {
	case "bench":
		bench(ctx, cni, list, *op, *count, *parallel, *prefix, *id)
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		succeed(result)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		succeed(nil)
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		succeed(nil)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		succeed(caps)
	case "version":
		info, err := cni.GetVersionInfo(ctx, list.Plugins[0].Network.Type)
		if err != nil {
			fail(err)
		}
		succeed(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
	case "status", "gc":
		// The first plugin's configuration, as a CNI 1.1 runtime sends it.
		var conf map[string]interface{}
		if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
			fail(err)
		}
		conf["cniVersion"] = list.CNIVersion
		conf["name"] = list.Name
		if command == "gc" {
			keep := []map[string]string{}
			for _, a := range strings.Split(*valid, ",") {
				if parts := strings.SplitN(a, "/", 2); len(parts) == 2 {
					keep = append(keep, map[string]string{"containerID": parts[0], "ifname": parts[1]})
				}
			}
			conf["cni.dev/valid-attachments"] = keep
		}
		stdin, _ := json.Marshal(conf)
		plugin, err := invoke.FindInPath(list.Plugins[0].Network.Type, dirs)
		if err != nil {
			fail(err)
		}
		err = invoke.ExecPluginWithoutResult(ctx, plugin, stdin,
			&invoke.Args{Command: strings.ToUpper(command), Path: *path}, nil)
		if err != nil {
			fail(err)
		}
		succeed(nil)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %s\n", command)
		os.Exit(2)
	}
}

// bench times ADD or DEL of count pods through libcni, parallel at a time, as a runtime's
// long-running process calls it (no process start in the figure). Pod i is container
// ID<i> in network namespace PREFIX<i>, with Kubernetes names.
func bench(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, op string, count, parallel int,
	prefix, id string) {
	ms := make([]float64, count)
	errs := make([]string, 0)
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s%d", id, i), NetNS: fmt.Sprintf("%s%d", prefix, i),
					IfName: "eth0", Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("%s%d", id, i)}}}
				start := time.Now()
				var err error
				if op == "add" {
					_, err = cni.AddNetworkList(ctx, list, rt)
				} else {
					err = cni.DelNetworkList(ctx, list, rt)
				}
				ms[i] = float64(time.Since(start).Microseconds()) / 1000
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		fail(fmt.Errorf("%d of %d failed, first: %s", len(errs), count, errs[0]))
	}
	succeed(map[string]interface{}{"ms": ms})
}

func succeed(result interface{}) {
	out := map[string]interface{}{"ok": true}
	if r, ok := result.(types.Result); ok && r != nil {
		raw, _ := json.Marshal(r)
		var v interface{}
		json.Unmarshal(raw, &v)
		out["result"] = v
	} else if result != nil {
		out["result"] = result
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func fail(err error) {
	out := map[string]interface{}{"ok": false, "code": 0, "msg": err.Error()}
	var e *types.Error
	if errors.As(err, &e) {
		out["code"] = e.Code
		out["msg"] = e.Msg
		out["details"] = e.Details
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(1)
}
