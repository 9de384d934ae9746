package sharding

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leasehold/leasehold/controllerruntime"
)

// examples/sharded-controller -controller-runtime, two processes: every
// ConfigMap is annotated by the process whose Sharder owns its shard; after
// SIGINT to one, the other annotates every ConfigMap of the shards it took
// over.
func TestShardedControllerControllerRuntimeMode(t *testing.T) {
	const shards = 8
	dir, bin, kubeconfig, ns, cms, _ := setUpShardedController(t, shards)
	// The controller-runtime Sharder shards by namespace/name (it refuses
	// shard.FieldUID): compute each ConfigMap's shard the same way.
	shardOf := map[string]int{}
	for i := range cms {
		shardOf[cms[i].Name], _ = controllerruntime.ShardOf(types.NamespacedName{Namespace: cms[i].Namespace, Name: cms[i].Name}, controllerruntime.FieldNamespacedName, shards)
	}
	procs := map[string]*exec.Cmd{}
	for _, id := range []string{"a", "b"} {
		cmd := exec.Command(bin, "-controller-runtime", "-kubeconfig", kubeconfig, "-id", id, "-namespace", ns, "-lease-namespace", ns,
			"-shards", fmt.Sprint(shards), "-lease-duration", "3s", "-renew-deadline", "2s", "-retry-period", "500ms")
		cmd.Stderr, _ = os.Create(filepath.Join(dir, id+".log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
			if t.Failed() {
				log, _ := os.ReadFile(filepath.Join(dir, id+".log"))
				t.Logf("%s's log (last 3000 bytes):\n%s", id, log[max(0, len(log)-3000):])
			}
		})
		procs[id] = cmd
	}
	// by returns the annotating process of each ConfigMap, and whether
	// each shard's ConfigMaps all carry one process and shard.
	by := func() (map[string]string, bool) {
		list, err := admin.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return nil, false
		}
		out, shardBy := map[string]string{}, map[int]string{}
		for _, cm := range list.Items {
			who := cm.Annotations["sharded-controller.example/by"]
			if who == "" || cm.Annotations["sharded-controller.example/shard"] != fmt.Sprint(shardOf[cm.Name]) {
				return nil, false
			}
			if o, ok := shardBy[shardOf[cm.Name]]; ok && o != who {
				return nil, false
			}
			shardBy[shardOf[cm.Name]] = who
			out[cm.Name] = who
		}
		return out, true
	}
	var first map[string]string
	took := poll.Eventually(t, 30*time.Second, "every ConfigMap annotated, both processes working", func() bool {
		m, ok := by()
		if !ok {
			return false
		}
		n := map[string]int{}
		for _, who := range m {
			n[who]++
		}
		first = m
		return n["a"] > 0 && n["b"] > 0
	})
	t.Logf("both processes: every ConfigMap annotated by its shard's owner, %v after the ConfigMaps existed", took.Round(time.Millisecond))
	if err := procs["b"].Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	took = poll.Eventually(t, 30*time.Second, "a annotated every ConfigMap after b's SIGINT", func() bool {
		m, ok := by()
		if !ok {
			return false
		}
		for _, who := range m {
			if who != "a" {
				return false
			}
		}
		return true
	})
	moved := 0
	for _, who := range first {
		if who == "b" {
			moved++
		}
	}
	t.Logf("SIGINT -> b: a annotated b's %d ConfigMaps %v after", moved, took.Round(time.Millisecond))
}
