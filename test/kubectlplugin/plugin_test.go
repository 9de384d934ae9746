package kubectlplugin

import (
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/shard"
	"github.com/leasehold/leasehold/test/testkit"
)

// renewedAgo parses the RENEWED cell of a status row ("412ms", "1.2s"
// followed by "ago").
func renewedAgo(t *testing.T, row []string, col int) time.Duration {
	t.Helper()
	if col+1 >= len(row) || row[col+1] != "ago" {
		t.Fatalf("RENEWED column is not '<duration> ago' in %q", row)
	}
	d, err := time.ParseDuration(row[col])
	if err != nil {
		t.Fatalf("RENEWED %q: %v", row[col], err)
	}
	return d
}

func TestStatusOfALeaseholdElector(t *testing.T) {
	ns := newNamespace(t)
	startLeasehold(t, ns, "ctrl", "replica-1")
	waitHolder(t, ns, "ctrl", "replica-1", 15*time.Second)
	time.Sleep(time.Second) // a few renewals

	out := mustKubectl(t, "leasehold", "status", "-n", ns)
	if !strings.HasPrefix(out, "NAME   HOLDER      DURATION   RENEWED") {
		t.Errorf("unexpected header:\n%s", out)
	}
	row := tableRow(t, out, "ctrl", "replica-1", "3s")
	// It renews every 500ms: the last renewal is well under the 3s lease.
	if d := renewedAgo(t, row, 3); d < 0 || d > 2500*time.Millisecond {
		t.Errorf("RENEWED %v ago: want a recent renewal", d)
	}
	if row[5] != "0" || row[6] != "<none>" {
		t.Errorf("row %q: want 0 transitions and no preferred holder", row)
	}

	var s leaseStatus
	if err := json.Unmarshal([]byte(mustKubectl(t, "leasehold", "status", "ctrl", "-n", ns, "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	since, err := time.ParseDuration(s.SinceRenewal)
	if err != nil || s.Holder != "replica-1" || s.LeaseDurationSeconds != 3 || s.Expired || since > 2500*time.Millisecond || s.ResourceVersion == "" {
		t.Errorf("status -o json: %+v (%v)", s, err)
	}
	// The same holder as kubectl itself reads it.
	if got := mustKubectl(t, "get", "lease", "ctrl", "-n", ns, "-o", "jsonpath={.spec.holderIdentity}"); got != "replica-1" {
		t.Errorf("kubectl get lease: holder %q", got)
	}
}

func TestStatusOfAClientGoElector(t *testing.T) {
	ns := newNamespace(t)
	startClientGo(t, ns, "legacy", "cg-1")
	waitHolder(t, ns, "legacy", "cg-1", 15*time.Second)

	out := mustKubectl(t, "leasehold", "status", "-A")
	row := tableRow(t, out, ns, "legacy", "cg-1", "3s")
	if d := renewedAgo(t, row, 4); d < 0 || d > 3*time.Second {
		t.Errorf("RENEWED %v ago: want a renewal within the lease", d)
	}
	if row[6] != "0" || row[7] != "<none>" {
		t.Errorf("row %q", row)
	}
	out = mustKubectl(t, "leasehold", "status", "legacy", "-n", ns, "-o", "yaml")
	for _, want := range []string{"holder: cg-1\n", "leaseDurationSeconds: 3\n", "expired: false\n", "namespace: " + ns + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status -o yaml lacks %q:\n%s", want, out)
		}
	}
}

// TestWatchAHandoffBetweenLeaseholdElectors: renewals, then a release on
// shutdown and the follower's takeover, then Ctrl-C.
func TestWatchAHandoffBetweenLeaseholdElectors(t *testing.T) {
	ns := newNamespace(t)
	first := startLeasehold(t, ns, "ctrl", "replica-1")
	waitHolder(t, ns, "ctrl", "replica-1", 15*time.Second)
	startLeasehold(t, ns, "ctrl", "replica-2")

	w := startKubectl(t, "leasehold", "watch", "ctrl", "-n", ns)
	w.waitOutput(t, ns+"/ctrl held by replica-1 (renewed ", 30*time.Second)
	w.waitOutput(t, "renewed by replica-1 (+", 10*time.Second)
	first.stop(t)
	w.waitOutput(t, "released by replica-1\n", 10*time.Second)
	w.waitOutput(t, "replica-2 acquired the Lease (transition 1; it was free for ", 10*time.Second)
	w.waitOutput(t, "renewed by replica-2 (+", 10*time.Second)
	if err := w.interrupt(t); err != nil {
		t.Errorf("watch exited with %v after SIGINT, want status 0; stderr:\n%s", err, w.errOut)
	}
	t.Logf("$ kubectl leasehold watch ctrl -n %s\n%s", ns, w.out)
	lines := strings.Split(strings.TrimSpace(w.out.String()), "\n")
	if !strings.HasSuffix(lines[len(lines)-1], "  stopped") {
		t.Errorf("last line %q, want stopped", lines[len(lines)-1])
	}
	stamp := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d\d\d  `)
	for _, l := range lines {
		if !stamp.MatchString(l) {
			t.Errorf("line without a timestamp: %q", l)
		}
	}
}

// standIn plays a leasehold leader that honours the preferred-holder
// annotation, with plain writes: when the annotation names someone, it
// writes that one as the holder (the successor taking over) and clears
// the annotation. For "*", it releases and lets successor take it without
// clearing the annotation, which yield then removes.
func standIn(t *testing.T, ns, name, successor string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	leases := admin.CoordinationV1().Leases(ns)
	w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			l, ok := ev.Object.(*coordinationv1.Lease)
			want := ""
			if ok {
				want = l.Annotations[preferredHolderAnnotation]
			}
			if want == "" || testkit.Holder(l) == "" || testkit.Holder(l) == want || (want == "*" && testkit.Holder(l) == successor) {
				continue
			}
			next, to := l.DeepCopy(), want
			if want == "*" {
				to = successor
				next.Spec.HolderIdentity = nil
				if next, err = leases.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
					t.Errorf("release: %v", err)
					return
				}
			} else {
				delete(next.Annotations, preferredHolderAnnotation)
			}
			now := metav1.NewMicroTime(time.Now())
			next.Spec.HolderIdentity = ptr.To(to)
			next.Spec.AcquireTime, next.Spec.RenewTime = &now, &now
			next.Spec.LeaseTransitions = ptr.To(ptr.Deref(next.Spec.LeaseTransitions, 0) + 1)
			if _, err := leases.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
				t.Errorf("take over: %v", err)
				return
			}
		}
	}()
}

var handoffRE = regexp.MustCompile(`: (\S+) holds the Lease now; the handoff took ([0-9.]+(ms|s))( \(unheld for [0-9.]+(ms|s)\))?\n$`)

func TestYieldWithACooperatingHolder(t *testing.T) {
	ns := newNamespace(t)
	writeLease(t, ns, "ctrl", "a", nil)
	standIn(t, ns, "ctrl", "c")

	r := kubectl(t, "leasehold", "yield", "ctrl", "-n", ns, "--to", "b")
	m := handoffRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || m[1] != "b" || !strings.HasPrefix(r.stdout, ns+"/ctrl: asked a to hand over to b\n") {
		t.Fatalf("yield --to b: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if took, _ := time.ParseDuration(m[2]); took > 5*time.Second {
		t.Errorf("the handoff took %v", took)
	}
	// The successor cleared the annotation: yield's own removal finds
	// nothing to remove, quietly.
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
	l := testkit.GetLease(t, admin, ns, "ctrl")
	if testkit.Holder(l) != "b" || *l.Spec.LeaseTransitions != 1 || l.Annotations[preferredHolderAnnotation] != "" {
		t.Errorf("lease after yield --to b: holder %q, transitions %d, annotations %v", testkit.Holder(l), *l.Spec.LeaseTransitions, l.Annotations)
	}

	// Without --to: released, then c takes it; the annotation "*" is left
	// by the stand-in, so yield removes it.
	r = kubectl(t, "leasehold", "yield", "ctrl", "-n", ns)
	if m := handoffRE.FindStringSubmatch(r.stdout); r.code != 0 || m == nil || m[1] != "c" ||
		!strings.HasPrefix(r.stdout, ns+"/ctrl: asked b to hand over to any other candidate\n") {
		t.Fatalf("yield: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	l = testkit.GetLease(t, admin, ns, "ctrl")
	if _, ok := l.Annotations[preferredHolderAnnotation]; ok || testkit.Holder(l) != "c" || *l.Spec.LeaseTransitions != 2 {
		t.Errorf("lease after yield: holder %q, transitions %d, annotations %v", testkit.Holder(l), *l.Spec.LeaseTransitions, l.Annotations)
	}
}

// TestYieldToAClientGoHolderTimesOut: client-go ignores the request; yield
// says so and withdraws it, and client-go keeps leading undisturbed.
func TestYieldToAClientGoHolderTimesOut(t *testing.T) {
	ns := newNamespace(t)
	startClientGo(t, ns, "legacy", "cg-1")
	waitHolder(t, ns, "legacy", "cg-1", 15*time.Second)

	r := kubectl(t, "leasehold", "yield", "legacy", "-n", ns, "--to", "cg-2", "--timeout", "3s")
	if r.code != 1 || !strings.Contains(r.stderr, "error: "+ns+"/legacy: still held by cg-1 after 3.0s; the handoff request was withdrawn\n") ||
		!strings.Contains(r.stderr, "client-go's leaderelection ignores the annotation") {
		t.Errorf("yield: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	l := testkit.GetLease(t, admin, ns, "legacy")
	if _, ok := l.Annotations[preferredHolderAnnotation]; ok {
		t.Errorf("annotation left behind: %v", l.Annotations)
	}
	rv := l.ResourceVersion
	testkit.Eventually(t, 5*time.Second, "client-go to renew again", func() bool {
		l := testkit.GetLease(t, admin, ns, "legacy")
		return l.ResourceVersion != rv && testkit.Holder(l) == "cg-1"
	})
}

// TestYieldBetweenLeaseholdElectors needs the library side of yield: a
// leasehold leader that sees the annotation hands over to the candidate
// it names. It runs once the library has it, which shows as the method
// (*leasehold.Elector).Yield, added with it.
func TestYieldBetweenLeaseholdElectors(t *testing.T) {
	if _, ok := reflect.TypeFor[*leasehold.Elector]().MethodByName("Yield"); !ok {
		t.Skip("needs leasehold's preferred-holder handoff (a leader that honours leasehold.PreferredHolderAnnotation, with Elector.Yield), not in the library yet")
	}
	ns := newNamespace(t)
	startLeasehold(t, ns, "ctrl", "replica-1")
	waitHolder(t, ns, "ctrl", "replica-1", 15*time.Second)
	startLeasehold(t, ns, "ctrl", "replica-2")
	startLeasehold(t, ns, "ctrl", "replica-3")
	time.Sleep(time.Second) // the candidates' watches are open
	w := startKubectl(t, "leasehold", "watch", "ctrl", "-n", ns)
	w.waitOutput(t, ns+"/ctrl held by replica-1", 30*time.Second)

	r := kubectl(t, "leasehold", "yield", "ctrl", "-n", ns, "--to", "replica-3")
	m := handoffRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || m[1] != "replica-3" {
		t.Fatalf("yield --to replica-3: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if took, _ := time.ParseDuration(m[2]); took > time.Second {
		t.Errorf("the handoff took %v, want well under a second", took)
	}
	l := testkit.GetLease(t, admin, ns, "ctrl")
	if _, ok := l.Annotations[preferredHolderAnnotation]; ok || testkit.Holder(l) != "replica-3" {
		t.Errorf("after the handoff: holder %q, annotations %v", testkit.Holder(l), l.Annotations)
	}
	r = kubectl(t, "leasehold", "yield", "ctrl", "-n", ns)
	m = handoffRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || m[1] == "replica-3" {
		t.Fatalf("yield: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The timeline shows both handoffs as they happened.
	w.waitOutput(t, "handoff requested: replica-1 should hand over to replica-3\n", 5*time.Second)
	w.waitOutput(t, "handoff requested: replica-3 should hand over to any other candidate\n", 5*time.Second)
	testkit.Eventually(t, 5*time.Second, "the watch to see "+m[1]+" take the Lease from replica-3", func() bool {
		out := w.out.String()
		return strings.Contains(out, m[1]+" acquired the Lease") || strings.Contains(out, m[1]+" took over from replica-3")
	})
	if err := w.interrupt(t); err != nil {
		t.Errorf("watch: %v", err)
	}
	t.Logf("$ kubectl leasehold watch ctrl -n %s\n%s", ns, w.out)
}

// TestStatusOfAShardGroup runs a real shard group (3 members, 8 shards)
// and reads it back: the members' Leases and the assignment Lease in the
// table, then the members with their shard counts.
func TestStatusOfAShardGroup(t *testing.T) {
	ns := newNamespace(t)
	const shards = 8
	for _, id := range []string{"a", "b", "c"} {
		startShardMember(t, ns, "web", id, shards)
	}
	writeLease(t, ns, "solo", "x", nil)
	var st shard.Status
	testkit.Eventually(t, 30*time.Second, "the group to settle: every shard owned by its target, 2-3 each", func() bool {
		l, err := admin.CoordinationV1().Leases(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return false
		}
		if st, err = shard.ReadStatus(l); err != nil || len(st.Moves) > 0 || len(st.Unowned) > 0 || len(st.Members) != 3 {
			return false
		}
		for _, m := range st.Members {
			if len(m.Owned) < 2 || len(m.Owned) > 3 {
				return false
			}
		}
		return true
	})

	out := mustKubectl(t, "leasehold", "status", "-n", ns)
	tables := strings.SplitN(out, "\n\n", 2)
	if len(tables) != 2 {
		t.Fatalf("want the Leases, a blank line, then the shard groups:\n%s", out)
	}
	if !strings.HasSuffix(strings.SplitN(tables[0], "\n", 2)[0], "GROUP") {
		t.Errorf("no GROUP column:\n%s", out)
	}
	if row := tableRow(t, tables[0], "web", "<none>"); row[len(row)-1] != "web" {
		t.Errorf("assignment Lease row %q", row)
	}
	if row := tableRow(t, tables[0], "solo", "x"); row[len(row)-1] != "<none>" {
		t.Errorf("row %q: want no group", row)
	}
	if !strings.HasPrefix(tables[1], "GROUP   SHARDS   MEMBER   OWNED   TARGETED   MEMBERSHIP\n") {
		t.Errorf("shard group table:\n%s", tables[1])
	}
	for _, m := range st.Members {
		if row := tableRow(t, tables[0], shard.MemberLeaseName("web", m.Identity), m.Identity); row[len(row)-1] != "web" {
			t.Errorf("member Lease row %q", row)
		}
		row := tableRow(t, tables[1], "web", "8", m.Identity)
		if n := strconv.Itoa(len(m.Owned)); row[3] != n || row[4] != n || row[5] != "renewed" || row[7] != "ago" {
			t.Errorf("member row %q: want %s owned and targeted, renewed recently", row, n)
		}
	}

	var s leaseStatus
	if err := json.Unmarshal([]byte(mustKubectl(t, "leasehold", "status", "web", "-n", ns, "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	if s.ShardAssignment == nil || s.ShardAssignment.Shards != shards || len(s.ShardAssignment.Members) != 3 {
		t.Fatalf("status web -o json: %+v", s)
	}
	for i, m := range s.ShardAssignment.Members {
		if m.Identity != st.Members[i].Identity || len(m.Owned) != len(st.Members[i].Owned) || m.Membership != "held" {
			t.Errorf("member %+v, want %+v held", m, st.Members[i])
		}
	}
}

func TestErrorsNameTheFix(t *testing.T) {
	ns := newNamespace(t)
	writeLease(t, ns, "ctrl", "a", nil)
	writeLease(t, ns, "only-here", "a", nil)

	r := kubectl(t, "leasehold", "status", "nope", "-n", ns)
	if r.code != 1 || r.stderr != `error: lease "nope" not found in namespace "`+ns+`"`+"\n"+
		`Fix: check the name and the namespace; 'kubectl leasehold status -n `+ns+`' lists the Leases there, 'kubectl leasehold status -A' all of them.`+"\n" {
		t.Errorf("missing Lease: exit %d, stderr %q", r.code, r.stderr)
	}
	r = kubectl(t, "leasehold", "watch", "only-here", "-n", "default")
	if r.code != 1 || !strings.Contains(r.stderr, `Fix: a Lease named "only-here" exists in namespace `+ns+`: pass -n `+ns+`.`) {
		t.Errorf("Lease in another namespace: exit %d, stderr %q", r.code, r.stderr)
	}

	nobody := userKubeconfig(t, ns, "nobody")
	r = kubectl(t, "leasehold", "status", "-n", ns, "--kubeconfig", nobody)
	if r.code != 1 || !strings.Contains(r.stderr, `error: RBAC forbids you to list Leases in namespace "`+ns+`"`) ||
		!strings.Contains(r.stderr, `User "nobody" cannot list resource "leases"`) ||
		!strings.Contains(r.stderr, `Fix: ask for a Role in namespace `+ns+` granting "list" on leases (apiGroups: [coordination.k8s.io]); check with 'kubectl auth can-i list leases.coordination.k8s.io -n `+ns+`'.`) {
		t.Errorf("forbidden list: exit %d, stderr %q", r.code, r.stderr)
	}

	reader := userKubeconfig(t, ns, "reader", "get", "list", "watch")
	mustKubectl(t, "leasehold", "status", "-n", ns, "--kubeconfig", reader)
	r = kubectl(t, "leasehold", "yield", "ctrl", "-n", ns, "--kubeconfig", reader)
	if r.code != 1 || !strings.Contains(r.stderr, `error: RBAC forbids you to patch Leases in namespace "`+ns+`"`) ||
		!strings.Contains(r.stderr, `'kubectl auth can-i patch leases.coordination.k8s.io -n `+ns+`'`) {
		t.Errorf("forbidden patch: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, ok := testkit.GetLease(t, admin, ns, "ctrl").Annotations[preferredHolderAnnotation]; ok {
		t.Error("a forbidden yield changed the Lease")
	}

	r = kubectl(t, "leasehold", "status", "-n", ns, "--context", "staging")
	if r.code != 1 || r.stderr != `error: context "staging" does not exist in the kubeconfig (`+adminKubeconfig+`)`+"\n"+
		`Fix: pass --context with one of: leasehold-envtest (list them with 'kubectl config get-contexts').`+"\n" {
		t.Errorf("missing context: exit %d, stderr %q", r.code, r.stderr)
	}
}
