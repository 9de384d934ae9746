package sharding

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold/shard"
)

// proc is one sharded-controller process.
type proc struct {
	id   string
	cmd  *exec.Cmd
	done chan struct{}
}

// timeline collects the processes' event lines.
type timeline struct {
	mu     sync.Mutex
	start  time.Time
	lines  []stamped
	owner  map[int]string // shard -> process running it, in order of arrival
	runs   []run          // by the processes' own timestamps
	killed map[string]time.Time
}

type stamped struct {
	at   time.Time
	line string
}

func (tl *timeline) add(id, line string) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return
	}
	ns, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
	at := time.Unix(0, ns)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	switch f[0] {
	case "STARTED":
		s, _ := strconv.Atoi(f[2])
		tl.owner[s] = id
		tl.runs = append(tl.runs, run{member: id, shard: s, start: at})
	case "STOPPED":
		s, _ := strconv.Atoi(f[2])
		if tl.owner[s] == id {
			delete(tl.owner, s)
		}
		for i := len(tl.runs) - 1; i >= 0; i-- {
			if r := &tl.runs[i]; r.member == id && r.shard == s && r.return_.IsZero() {
				r.return_ = at
				break
			}
		}
	case "RECONCILED":
		return // too many for the timeline
	}
	tl.lines = append(tl.lines, stamped{at, strings.Join(f[:len(f)-1], " ")})
}

func (tl *timeline) note(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.lines = append(tl.lines, stamped{time.Now(), "== " + fmt.Sprintf(format, args...)})
}

func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	ls := slices.Clone(tl.lines)
	slices.SortStableFunc(ls, func(a, b stamped) int { return a.at.Compare(b.at) })
	var out []string
	for _, l := range ls {
		out = append(out, fmt.Sprintf("[%8.3fs] %s", l.at.Sub(tl.start).Seconds(), l.line))
	}
	return strings.Join(out, "\n")
}

// overlaps lists the runs of one shard in two processes at once, by the
// processes' own clocks (one machine); a killed process's runs end when
// it was killed.
func (tl *timeline) overlaps() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	end := func(r run) time.Time {
		if !r.return_.IsZero() {
			return r.return_
		}
		if k, ok := tl.killed[r.member]; ok {
			return k
		}
		return time.Now().Add(time.Hour)
	}
	var bad []string
	for i, a := range tl.runs {
		for _, b := range tl.runs[i+1:] {
			if a.shard == b.shard && a.member != b.member && a.start.Before(end(b)) && b.start.Before(end(a)) {
				bad = append(bad, fmt.Sprintf("shard %d: %s [%v, %v) and %s [%v, %v)", a.shard,
					a.member, a.start.Sub(tl.start), end(a).Sub(tl.start), b.member, b.start.Sub(tl.start), end(b).Sub(tl.start)))
			}
		}
	}
	return bad
}

func (tl *timeline) owners() map[string][]int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	out := map[string][]int{}
	for s, id := range tl.owner {
		if _, dead := tl.killed[id]; !dead {
			out[id] = append(out[id], s)
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

// setUpShardedController builds examples/sharded-controller, writes a
// kubeconfig for it, and creates 48 ConfigMaps in a new namespace, each
// mapped to its shard out of shards by UID.
func setUpShardedController(t *testing.T, shards int) (dir, bin, kubeconfig, ns string, cms []corev1.ConfigMap, shardOf map[string]int) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "sharded-controller")
	build := exec.Command("go", "build", "-o", bin, "./sharded-controller")
	build.Dir = filepath.Join("..", "..", "examples")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/sharded-controller: %v\n%s", err, out)
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, nil); err != nil {
		t.Fatal(err)
	}
	ns = newNamespace(t)
	cms = createConfigMaps(t, admin, ns, "cm", 48)
	shardOf = map[string]int{}
	for i := range cms {
		shardOf[cms[i].Name], _ = shard.Of(&cms[i], shard.FieldUID, shards)
	}
	return dir, bin, kubeconfig, ns, cms, shardOf
}

// examples/sharded-controller as three real processes on the real
// control plane: the ConfigMaps are spread over them, each shard runs in
// one process, SIGINT hands a process's shards over at once, SIGKILL
// after its Lease expires, and the others keep reconciling throughout.
func TestShardedControllerThreeProcesses(t *testing.T) {
	const shards = 8
	dir, bin, kubeconfig, ns, cms, shardOf := setUpShardedController(t, shards)

	tl := &timeline{start: time.Now(), owner: map[int]string{}, killed: map[string]time.Time{}}
	t.Cleanup(func() { t.Log("timeline:\n" + tl.String()) })
	procs := map[string]*proc{}
	start := func(id string) {
		cmd := exec.Command(bin, "-kubeconfig", kubeconfig, "-id", id, "-namespace", ns, "-lease-namespace", ns,
			"-shards", fmt.Sprint(shards), "-lease-duration", "3s", "-renew-deadline", "2s", "-retry-period", "500ms")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr, _ = os.Create(filepath.Join(dir, id+".log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &proc{id: id, cmd: cmd, done: make(chan struct{})}
		procs[id] = p
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				tl.add(id, sc.Text())
			}
			_ = cmd.Wait()
			close(p.done)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-p.done
		})
	}
	// reconciledBy: every ConfigMap carries the annotation of the process
	// that runs its shard now.
	reconciledBy := func() bool {
		own := tl.owners()
		runner := map[int]string{}
		for id, ss := range own {
			for _, s := range ss {
				runner[s] = id
			}
		}
		if len(runner) != shards {
			return false
		}
		list, err := admin.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		n := 0
		for _, cm := range list.Items {
			s, ok := shardOf[cm.Name]
			if !ok {
				continue
			}
			if cm.Annotations["sharded-controller.example/by"] != runner[s] {
				return false
			}
			n++
		}
		return n == len(cms)
	}
	counts := func() string {
		own := tl.owners()
		var parts []string
		for _, id := range []string{"a", "b", "c"} {
			parts = append(parts, fmt.Sprintf("%s:%v", id, own[id]))
		}
		return strings.Join(parts, " ")
	}

	for _, id := range []string{"a", "b", "c"} {
		start(id)
	}
	took := poll.Eventually(t, 30*time.Second, "8 shards over 3 processes, every ConfigMap reconciled by its shard's process", func() bool {
		return balancedOwners(tl.owners(), shards, "a", "b", "c") && reconciledBy()
	})
	tl.note("all 48 ConfigMaps reconciled, %v after start; shards %s", took.Round(time.Millisecond), counts())

	// SIGINT b: its shards move at once.
	tl.note("SIGINT -> b")
	_ = procs["b"].cmd.Process.Signal(syscall.SIGINT)
	took = poll.Eventually(t, 10*time.Second, "a and c run all shards and reconciled b's ConfigMaps", func() bool {
		return balancedOwners(tl.owners(), shards, "a", "c") && reconciledBy()
	})
	tl.note("b's shards run in a and c, their ConfigMaps reconciled again, %v after SIGINT; shards %s", took.Round(time.Millisecond), counts())
	select {
	case <-procs["b"].done:
	case <-time.After(10 * time.Second):
		t.Error("b did not exit after SIGINT")
	}

	// SIGKILL a: its shards move once its Lease expires (3s).
	tl.note("SIGKILL -> a (no handover: c waits for a's Lease to expire, 3s)")
	tl.mu.Lock()
	tl.killed["a"] = time.Now()
	tl.mu.Unlock()
	_ = procs["a"].cmd.Process.Kill()
	took = poll.Eventually(t, 15*time.Second, "c runs all shards and reconciled every ConfigMap", func() bool {
		return balancedOwners(tl.owners(), shards, "c") && reconciledBy()
	})
	tl.note("c runs all 8 shards, every ConfigMap reconciled by c, %v after SIGKILL", took.Round(time.Millisecond))
	if took < 2*time.Second {
		t.Errorf("c took a's shards %v after SIGKILL, before a's Lease could expire", took)
	}

	lease, err := admin.CoordinationV1().Leases(ns).Get(context.Background(), "sharded-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := shard.ReadStatus(lease)
	if err != nil {
		t.Fatal(err)
	}
	tl.note("assignment (shard.ReadStatus): %d shards, members %+v, pending moves %v", st.Shards, st.Members, st.Moves)
	if bad := tl.overlaps(); len(bad) > 0 {
		t.Errorf("a shard ran in two processes at once: %v", bad)
	}
}

// balancedOwners: every shard of own is owned by exactly one of ids, and
// their counts differ by at most one.
func balancedOwners(own map[string][]int, shards int, ids ...string) bool {
	total, mn, mx := 0, shards, 0
	for id, ss := range own {
		if !slices.Contains(ids, id) {
			return false
		}
		total += len(ss)
	}
	for _, id := range ids {
		mn, mx = min(mn, len(own[id])), max(mx, len(own[id]))
	}
	return total == shards && mx-mn <= 1
}
