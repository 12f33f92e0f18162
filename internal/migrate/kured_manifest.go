package migrate

import (
	"path"
	"strings"
)

// kuredManifest reads the kured container of a DaemonSet manifest: its
// command and args (kured's flags), its KURED_* environment variables with
// a literal value, and its host path mounts, which translate the sentinel
// path kured sees into the host's.
func kuredManifest(src Source) ([]kuredArg, []Note, error) {
	docs, err := parseYAML(src)
	if err != nil {
		return nil, nil, err
	}
	var found *ynode
	var pod *ynode
	for _, doc := range docs {
		spec := doc.get("spec", "template", "spec")
		if doc.get("kind").str() != "DaemonSet" || spec == nil {
			continue
		}
		for _, c := range spec.get("containers").itemsOf() {
			if isKuredContainer(c) {
				if found != nil {
					return nil, nil, errorf(Pos{src.Name, c.line}, "", "more than one kured container; give the one to migrate in a file of its own")
				}
				found, pod = c, spec
			}
		}
	}
	if found == nil {
		return nil, nil, errorf(Pos{src.Name, 0}, "", "no DaemonSet with a kured container (one named kured, or running a kured binary or image)")
	}
	var words []string
	var lines []int
	for _, key := range []string{"command", "args"} {
		items := found.get(key).itemsOf()
		for i, it := range items {
			if key == "command" && i == 0 && path.Base(it.str()) == "kured" {
				continue
			}
			words = append(words, it.str())
			lines = append(lines, it.line)
		}
	}
	args, err := parseKuredWords(words, func(i int) Pos { return Pos{src.Name, lines[i]} })
	if err != nil {
		return nil, nil, err
	}
	var notes []Note
	for _, e := range found.get("env").itemsOf() {
		name := e.get("name").str()
		if !strings.HasPrefix(name, "KURED_") {
			continue
		}
		val := e.get("value")
		if val == nil {
			if name != "KURED_NODE_ID" {
				notes = append(notes, Note{Pos: Pos{src.Name, e.line}, Key: name, Text: "its value comes from the cluster (valueFrom) and is not migrated"})
			}
			continue
		}
		a, err := kuredEnv(name, val.str(), Pos{src.Name, val.line})
		if err != nil {
			return nil, nil, err
		}
		args = append(args, a)
	}
	// Where the sentinel lives on the host: a volumeMount over a hostPath
	// volume maps the container's path back.
	hostPaths := map[string]string{}
	for _, v := range pod.get("volumes").itemsOf() {
		if hp := v.get("hostPath", "path").str(); hp != "" {
			hostPaths[v.get("name").str()] = hp
		}
	}
	var mounts []mount
	for _, m := range found.get("volumeMounts").itemsOf() {
		if hp, ok := hostPaths[m.get("name").str()]; ok {
			mounts = append(mounts, mount{container: m.get("mountPath").str(), host: hp, line: m.line})
		}
	}
	for i := range args {
		if args[i].name == "reboot-sentinel" {
			args[i].hostPath, args[i].mountLine = hostPath(args[i].value, mounts)
		}
	}
	if !hasArg(args, "reboot-sentinel") {
		// kured's default sentinel, seen through the same mounts.
		if hp, line := hostPath(kuredFlags["reboot-sentinel"].def, mounts); hp != "" {
			args = append(args, kuredArg{name: "reboot-sentinel", value: kuredFlags["reboot-sentinel"].def, pos: Pos{src.Name, found.line}, hostPath: hp, mountLine: line, implied: true})
		}
	}
	return args, notes, nil
}

type mount struct {
	container, host string
	line            int
}

// hostPath maps a container path through the longest mount that holds it.
func hostPath(p string, mounts []mount) (string, int) {
	best := mount{}
	for _, m := range mounts {
		mp := strings.TrimSuffix(m.container, "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && len(mp) > len(best.container) {
			best = mount{container: mp, host: m.host, line: m.line}
		}
	}
	if best.container == "" {
		return "", 0
	}
	return path.Join(best.host, strings.TrimPrefix(p, best.container)), best.line
}

func hasArg(args []kuredArg, name string) bool {
	for _, a := range args {
		if a.name == name {
			return true
		}
	}
	return false
}

func (n *ynode) itemsOf() []*ynode {
	if n == nil || !n.isSeq {
		return nil
	}
	return n.items
}

func isKuredContainer(c *ynode) bool {
	if c.get("name").str() == "kured" {
		return true
	}
	if cmd := c.get("command").itemsOf(); len(cmd) > 0 && path.Base(cmd[0].str()) == "kured" {
		return true
	}
	return strings.Contains(c.get("image").str(), "/kured:")
}
