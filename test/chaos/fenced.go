package chaos

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/internal/sleep"
)

// In ModeFenced, the candidates write as one service account, the fenced
// writer, and their work updates the ConfigMap FencedObject continuously,
// each write stamped with its term (fence.Stamp) and conditioned on the
// version it read. The fence.Policy of the Lease refuses, at the API
// server, every write whose stamp is not the Lease's current term.
const (
	FencedObject = "fenced"
	fencedSA     = "controller"
)

// FencedWrite is one version of FencedObject, as the admin watch saw it:
// a write the API server admitted.
type FencedWrite struct {
	RV     string
	Writer string // the candidate, from the object's data
	Holder string // the stamp's holder
	Term   string // the stamp's leaseTransitions
	UID    string // the stamp's Lease UID
	Seen   time.Time
}

// fenceWriter is the username the candidates write as.
func (d *driver) fenceWriter() string { return fence.ServiceAccount(d.ns, fencedSA) }

// installFence lets the fenced writer do anything in the namespace, and
// installs the stamp policy of the Lease on ConfigMaps there. It returns
// a func that removes the policy (cluster-scoped) again.
func (d *driver) installFence(ctx context.Context) (func(), error) {
	rbac := d.admin.RbacV1()
	if _, err := rbac.Roles(d.ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "chaos-controller"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
	}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("fenced writer's Role: %w", err)
	}
	if _, err := rbac.RoleBindings(d.ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "chaos-controller"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "chaos-controller"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: fencedSA, Namespace: d.ns}},
	}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("fenced writer's RoleBinding: %w", err)
	}
	vap, binding, err := fence.Policy(fence.Config{
		Lease:      d.ns + "/chaos",
		Writers:    []string{d.fenceWriter()},
		Resources:  []fence.Resource{{Group: "", Resource: "configmaps"}},
		Namespaces: []string{d.ns},
	})
	if err != nil {
		return nil, err
	}
	api := d.admin.AdmissionregistrationV1()
	if _, err := api.ValidatingAdmissionPolicies().Create(ctx, vap, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create ValidatingAdmissionPolicy: %w", err)
	}
	remove := func() {
		bg := context.WithoutCancel(ctx)
		_ = api.ValidatingAdmissionPolicyBindings().Delete(bg, binding.Name, metav1.DeleteOptions{})
		_ = api.ValidatingAdmissionPolicies().Delete(bg, vap.Name, metav1.DeleteOptions{})
	}
	if _, err := api.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		remove()
		return nil, fmt.Errorf("create ValidatingAdmissionPolicyBinding: %w", err)
	}
	return remove, nil
}

// waitFenceEnforced waits until the API server refuses, as the fenced
// writer, a dry-run write stamped with a term no Lease has.
func (d *driver) waitFenceEnforced(ctx context.Context) error {
	cfg := rest.CopyConfig(d.cfg.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: d.fenceWriter()}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: d.ns, GenerateName: "probe-"}}
		_ = fence.StampTerm(leasehold.Term{Holder: "chaos-probe", Transitions: -1, UID: types.UID("probe")}, cm)
		_, last = cs.CoreV1().ConfigMaps(d.ns).Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if fence.IsFenced(last) {
			return nil
		}
		if sleep.For(ctx, 100*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("the fence policy is not enforced after 60s: a write with a bogus stamp returned %v", last)
}

// watchFenced records every version of FencedObject.
func (d *driver) watchFenced(ctx context.Context) {
	cms := d.admin.CoreV1().ConfigMaps(d.ns)
	rv := ""
	for ctx.Err() == nil {
		w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, FieldSelector: "metadata.name=" + FencedObject})
		if err != nil {
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				d.leaseNote("fenced object watch from %s: %v; versions may be missed", rv, err)
				rv = ""
			}
			sleep.For(ctx, 100*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified:
				cm := ev.Object.(*corev1.ConfigMap)
				rv = cm.ResourceVersion
				d.recordWrite(cm)
			case watch.Error:
				if ctx.Err() == nil {
					d.leaseNote("fenced object watch error after %s (%v); versions may be missed", rv, apierrors.FromObject(ev.Object))
				}
				rv = ""
			}
		}
		w.Stop()
	}
}

func (d *driver) recordWrite(cm *corev1.ConfigMap) {
	a := cm.Annotations
	v := FencedWrite{RV: cm.ResourceVersion, Writer: cm.Data["writer"], Holder: a[fence.HolderAnnotation], Term: a[fence.TermAnnotation], UID: a[fence.LeaseUIDAnnotation], Seen: time.Now()}
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.rec.Writes); n > 0 && d.rec.Writes[n-1].RV == v.RV {
		return
	}
	d.rec.Writes = append(d.rec.Writes, v)
}

// stale checks (g): every admitted write of FencedObject carries the
// stamp of the Lease's term at that point of etcd's history (the newest
// Lease version older than the write, by resourceVersion: one etcd, one
// revision counter), and that term has a holder.
func (r *Report) stale() {
	rec := r.Rec
	if rec.Config.Mode != ModeFenced {
		return
	}
	type lv struct {
		rv int64
		v  LeaseVersion
	}
	var leases []lv
	for _, v := range rec.Lease {
		n, err := strconv.ParseInt(v.RV, 10, 64)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("Lease version %q is not a number", v.RV))
			return
		}
		leases = append(leases, lv{n, v})
	}
	for _, w := range rec.Writes {
		n, err := strconv.ParseInt(w.RV, 10, 64)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("write version %q is not a number", w.RV))
			continue
		}
		r.FencedWrites++
		var cur *LeaseVersion
		for i := range leases {
			if leases[i].rv < n {
				cur = &leases[i].v
			}
		}
		term := ""
		if cur != nil {
			term = strconv.Itoa(int(cur.Transitions))
		}
		switch {
		case cur == nil:
			r.Stale = append(r.Stale, fmt.Sprintf("write at rv %s by %s (stamp %s/%s) before any Lease version", w.RV, w.Writer, w.Holder, w.Term))
		case cur.Deleted || cur.Holder == "":
			r.Stale = append(r.Stale, fmt.Sprintf("write at rv %s by %s (stamp %s/%s) admitted while the Lease (rv %s) had no holder", w.RV, w.Writer, w.Holder, w.Term, cur.RV))
		case cur.Holder != w.Holder || term != w.Term:
			r.Stale = append(r.Stale, fmt.Sprintf("write at rv %s by %s with the stamp of term %s/%s admitted while the Lease (rv %s) was in term %s/%s",
				w.RV, w.Writer, w.Holder, w.Term, cur.RV, cur.Holder, term))
		}
	}
	for _, e := range rec.Events {
		if e.Kind == "REFUSED" {
			r.Refused++
		}
	}
	if r.FencedWrites == 0 {
		r.Problems = append(r.Problems, "no fenced write was admitted: the work never wrote")
	}
}
