package fencing

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
)

// measureEnv, set to 1, runs TestMeasure at full size. Unset, it runs
// small, as a check of the invariants. Its report is logged: run it with
// go test -v.
const measureEnv = "LEASEHOLD_FENCE_MEASURE"

// What the stamp policy costs per write, and how long after a takeover the
// API server still admits the old term. Report only: no timing is
// asserted. What is asserted holds whatever the timing: on one API
// server, once a write of the old term has been refused, no later write
// of it is admitted; and the new term is admitted in the end.
func TestMeasure(t *testing.T) {
	full := os.Getenv(measureEnv) == "1"
	writes, takeovers := 200, 5
	if full {
		writes, takeovers = 2000, 40
	}
	fenced, open := newNamespace(t), newNamespace(t)
	ctx := context.Background()
	lease := setLease(t, fenced, leaseName, "a", 0)
	cur := termOf(lease)

	// Latency: the same stamped update, alternately in the fenced
	// namespace and in one no policy matches, as the controller.
	w := clientAs(writer(fenced), "")
	wOpen := clientAs(fence.ServiceAccount(open, controllerSA), "")
	before := latencies(t, ctx, writes/2, w, fenced, &cur)
	installStampPolicyFor(t, fenced, writer(fenced))
	after, baseline := interleaved(t, ctx, writes, w, fenced, wOpen, open, &cur)

	// The stale window: old-term writers hammer the fenced namespace while
	// the Lease changes hands.
	var runs, runs2 []takeoverRun
	takeover := func(via kubernetes.Interface) takeoverRun {
		next := cur
		next.Transitions++
		next.Holder = map[bool]string{true: "a", false: "b"}[cur.Holder == "b"]
		r := measureTakeover(t, ctx, via, fenced, cur, next)
		cur = next
		return r
	}
	for i := 0; i < takeovers; i++ {
		runs = append(runs, takeover(w))
	}
	if full {
		// The same with two API servers on one etcd: the Lease changes
		// through the first, the controller writes through the second,
		// whose copy of the Lease comes through its own watch.
		second, err := cp.AddAPIServer(ctx)
		if err != nil {
			t.Fatalf("second kube-apiserver: %v", err)
		}
		cfg := second.Config()
		cfg.QPS, cfg.Burst = 1000, 2000
		cfg.Impersonate.UserName = writer(fenced)
		w2 := kubernetes.NewForConfigOrDie(cfg)
		eventually(t, 30*time.Second, "the second API server to enforce the policy", func() bool {
			cm := configMap(t, fenced, "", &leasehold.Term{Holder: "fence-probe", Transitions: -1, UID: "probe"})
			cm.GenerateName = "probe-"
			_, err := w2.CoreV1().ConfigMaps(fenced).Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return fence.IsFenced(err)
		})
		for i := 0; i < takeovers; i++ {
			runs2 = append(runs2, takeover(w2))
		}
	}

	var report strings.Builder
	fmt.Fprintf(&report, "fence measurements (%s; one kube-apiserver with its watch cache, one etcd, sharing %d CPUs with the test)\n", map[bool]string{true: "full run", false: "small run"}[full], runtime.NumCPU())
	fmt.Fprintf(&report, "write latency, stamped ConfigMap update as the controller's service account (%d each):\n", len(after))
	fmt.Fprintf(&report, "  no policy installed      p50 %6s  p99 %6s\n", ms(pct(before, 50)), ms(pct(before, 99)))
	fmt.Fprintf(&report, "  policy, not matched      p50 %6s  p99 %6s\n", ms(pct(baseline, 50)), ms(pct(baseline, 99)))
	fmt.Fprintf(&report, "  policy, fenced           p50 %6s  p99 %6s   (added: p50 %s, p99 %s)\n", ms(pct(after, 50)), ms(pct(after, 99)),
		ms(pct(after, 50)-pct(baseline, 50)), ms(pct(after, 99)-pct(baseline, 99)))
	reportTakeovers(&report, "after a takeover", runs)
	if len(runs2) > 0 {
		reportTakeovers(&report, "two API servers, the takeover through one, the old and new terms' writes through the other", runs2)
	}
	t.Log("\n" + report.String())
}

// reportTakeovers adds what the runs showed to report.
func reportTakeovers(report *strings.Builder, title string, runs []takeoverRun) {
	var oldLate, oldBy, newLate, newBy []time.Duration
	stale, oldWrites, storedAfter, storedRuns := 0, 0, 0, 0
	var storedLatest []time.Duration
	for _, r := range runs {
		storedAfter += r.storedAfter
		if r.storedAfter > 0 {
			storedRuns++
			storedLatest = append(storedLatest, r.storedAfterLatest)
		}
		oldLate, oldBy = append(oldLate, r.oldAdmittedLate), append(oldBy, r.oldRefusedBy)
		newLate, newBy = append(newLate, r.newRefusedLate), append(newBy, r.newAdmittedBy)
		stale += r.staleAdmitted
		oldWrites += r.oldWrites
	}
	dist := func(ds []time.Duration) string {
		return fmt.Sprintf("p50 %s  p99 %s  max %s", ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)))
	}
	fmt.Fprintf(report, "%s (%d takeovers; %d old-term writes from 2 writers around them; times from the takeover write's response):\n", title, len(runs), oldWrites)
	fmt.Fprintf(report, "  old term still admitted, at least (latest send of an admitted old write): %s\n", dist(oldLate))
	fmt.Fprintf(report, "  old term still admitted, at most (first answer refusing it):              %s\n", dist(oldBy))
	fmt.Fprintf(report, "  old-term writes sent after the response and admitted: %d in all\n", stale)
	fmt.Fprintf(report, "  old-term writes stored after the takeover in etcd's order: %d in all, in %d of %d takeovers", storedAfter, storedRuns, len(runs))
	if storedRuns > 0 {
		fmt.Fprintf(report, "; the latest sent %s after the response (max; negative: before)", ms(pct(storedLatest, 100)))
	}
	report.WriteString("\n")
	fmt.Fprintf(report, "  new term still refused, at least (latest send of a refused new write):    %s\n", dist(newLate))
	fmt.Fprintf(report, "  new term admitted, at most (first answer admitting it):                   %s\n", dist(newBy))
}

// installStampPolicyFor installs the stamp policy for ns's Lease, fencing
// only ns's ConfigMaps written by user.
func installStampPolicyFor(t *testing.T, ns, user string) {
	t.Helper()
	vap, b, err := fence.Policy(fence.Config{
		Lease: ns + "/" + leaseName, Writers: []string{user},
		Resources: []fence.Resource{{Resource: "configmaps"}}, Namespaces: []string{ns},
	})
	if err != nil {
		t.Fatal(err)
	}
	install(t, vap, b, stampProbe(ns))
}

// latencies times n stamped updates of one ConfigMap in ns.
func latencies(t *testing.T, ctx context.Context, n int, c kubernetes.Interface, ns string, term *leasehold.Term) []time.Duration {
	t.Helper()
	u := newUpdater(t, ctx, c, ns, "latency", term)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		d, err := u.update(ctx)
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		out = append(out, d)
	}
	return out
}

// interleaved times n/2 updates in each of two namespaces, alternately.
func interleaved(t *testing.T, ctx context.Context, n int, c1 kubernetes.Interface, ns1 string, c2 kubernetes.Interface, ns2 string, term *leasehold.Term) (a, b []time.Duration) {
	t.Helper()
	u1 := newUpdater(t, ctx, c1, ns1, "latency-fenced", term)
	u2 := newUpdater(t, ctx, c2, ns2, "latency-open", term)
	for i := 0; i < n/2; i++ {
		for _, x := range []struct {
			u   *updater
			out *[]time.Duration
		}{{u1, &a}, {u2, &b}} {
			d, err := x.u.update(ctx)
			if err != nil {
				t.Fatalf("update %d in %s: %v", i, x.u.ns, err)
			}
			*x.out = append(*x.out, d)
		}
	}
	return a, b
}

// updater updates one ConfigMap again and again from the last version it
// wrote, stamped with a term: one request per update.
type updater struct {
	c  kubernetes.Interface
	ns string
	cm *corev1.ConfigMap
	n  int
}

func newUpdater(t *testing.T, ctx context.Context, c kubernetes.Interface, ns, name string, term *leasehold.Term) *updater {
	t.Helper()
	cm, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, name, term), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &updater{c: c, ns: ns, cm: cm}
}

func (u *updater) update(ctx context.Context) (time.Duration, error) {
	u.n++
	u.cm.Data = map[string]string{"n": fmt.Sprint(u.n)}
	start := time.Now()
	got, err := u.c.CoreV1().ConfigMaps(u.ns).Update(ctx, u.cm, metav1.UpdateOptions{})
	d := time.Since(start)
	if err == nil {
		u.cm = got
	}
	return d, err
}

// takeoverRun is what one takeover showed, in times from the response to
// the takeover's write (the moment a new leader starts its work).
type takeoverRun struct {
	// oldAdmittedLate is how long after it the latest admitted old-term
	// write was sent (0 if none was sent after it): the old term was
	// still admitted at least that long.
	oldAdmittedLate time.Duration
	// oldRefusedBy is when the first refused old-term write had its
	// answer (0 if before): the old term was admitted at most that long.
	oldRefusedBy time.Duration
	// staleAdmitted counts old-term writes sent after it and admitted.
	staleAdmitted, oldWrites int
	// storedAfter counts old-term writes stored after the takeover in
	// etcd's order (admitted before the API server's copy of the Lease
	// changed, committed after the takeover); storedAfterLatest is when
	// the latest of them was sent.
	storedAfter       int
	storedAfterLatest time.Duration
	// newRefusedLate is how long after it the latest refused new-term
	// write was sent (0 if none); newAdmittedBy, when the first admitted
	// one had its answer.
	newRefusedLate, newAdmittedBy time.Duration
}

type timedWrite struct {
	start, end time.Time
	admitted   bool
	rv         int64 // the resourceVersion stored, if admitted (an update)
}

// measureTakeover writes the old term's stamp from two goroutines (real
// updates, each on its own ConfigMap) and the new term's (dry-run
// creates) from a third, all through w, while the Lease moves from old to
// next with one update as admin.
func measureTakeover(t *testing.T, ctx context.Context, w kubernetes.Interface, ns string, old, next leasehold.Term) takeoverRun {
	t.Helper()
	stop := make(chan struct{})
	var mu sync.Mutex
	var oldW, newW []timedWrite
	record := func(list *[]timedWrite, start time.Time, rv string, err error) {
		end := time.Now()
		n, _ := strconv.ParseInt(rv, 10, 64)
		mu.Lock()
		*list = append(*list, timedWrite{start: start, end: end, admitted: err == nil, rv: n})
		mu.Unlock()
		if err != nil && !fence.IsFenced(err) {
			t.Errorf("write: %v", err)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		u := newUpdater(t, ctx, w, ns, fmt.Sprintf("stale-%d-%d", old.Transitions, g), &old)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := u.update(ctx)
				record(&oldW, start, u.cm.ResourceVersion, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		cm := configMap(t, ns, "", &next)
		cm.GenerateName = "new-"
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			_, err := w.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			record(&newW, start, "", err)
		}
	}()

	time.Sleep(100 * time.Millisecond) // writers under way
	l, err := admin.CoordinationV1().Leases(ns).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.HolderIdentity = ptr.To(next.Holder)
	l.Spec.LeaseTransitions = ptr.To(next.Transitions)
	took, err := admin.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ack := time.Now()
	tookRV, _ := strconv.ParseInt(took.ResourceVersion, 10, 64)
	// Until the old term has been refused and the new one admitted (or
	// 10s, whatever the load), then a little longer.
	seen := func() bool {
		mu.Lock()
		defer mu.Unlock()
		refused, admitted := false, false
		for _, x := range oldW {
			refused = refused || !x.admitted
		}
		for _, x := range newW {
			admitted = admitted || x.admitted
		}
		return refused && admitted
	}
	for deadline := time.Now().Add(10 * time.Second); !seen() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()

	r := takeoverRun{oldWrites: len(oldW)}
	// On one API server, the old term, once refused, stays refused.
	var firstRefusedEnd time.Time
	for _, x := range oldW {
		if !x.admitted && (firstRefusedEnd.IsZero() || x.end.Before(firstRefusedEnd)) {
			firstRefusedEnd = x.end
		}
	}
	if firstRefusedEnd.IsZero() {
		t.Fatalf("takeover to %s: no old-term write was refused", next)
	}
	r.oldRefusedBy = max(0, firstRefusedEnd.Sub(ack))
	for _, x := range oldW {
		if x.admitted && x.start.After(firstRefusedEnd) {
			t.Errorf("takeover to %s: an old-term write sent %v after one was refused was admitted", next, x.start.Sub(firstRefusedEnd))
		}
		// Resource versions are etcd revisions here: one etcd, one
		// order of all writes.
		if x.admitted && x.rv > tookRV {
			r.storedAfter++
			late := x.start.Sub(ack)
			if r.storedAfter == 1 || late > r.storedAfterLatest {
				r.storedAfterLatest = late
			}
		}
		if x.admitted && x.start.After(ack) {
			r.staleAdmitted++
			r.oldAdmittedLate = max(r.oldAdmittedLate, x.start.Sub(ack))
		}
	}
	var firstAdmittedEnd time.Time
	for _, x := range newW {
		if x.admitted && (firstAdmittedEnd.IsZero() || x.end.Before(firstAdmittedEnd)) {
			firstAdmittedEnd = x.end
		}
		if !x.admitted {
			r.newRefusedLate = max(r.newRefusedLate, x.start.Sub(ack))
		}
	}
	if firstAdmittedEnd.IsZero() {
		t.Fatalf("takeover to %s: the new term was never admitted", next)
	}
	r.newAdmittedBy = max(0, firstAdmittedEnd.Sub(ack))
	return r
}

// pct returns the p-th percentile of ds (p in 0..100, nearest rank).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
