package leaseholdtest

import (
	"context"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1apply "k8s.io/client-go/applyconfigurations/coordination/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

// leaseClient serves one namespace's Leases for one client.
type leaseClient struct {
	server    *Server
	client    string
	namespace string
}

var _ coordinationv1client.LeaseInterface = (*leaseClient)(nil)

func (c *leaseClient) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: c.namespace, Name: name}
}

func (c *leaseClient) req(verb, name string, lease *coordinationv1.Lease) Request {
	return Request{Client: c.client, Verb: verb, Namespace: c.namespace, Name: name, Lease: lease}
}

// Get returns the stored Lease or 404.
func (c *leaseClient) Get(ctx context.Context, name string, _ metav1.GetOptions) (*coordinationv1.Lease, error) {
	if err := c.server.serve(ctx, c.req("get", name, nil)); err != nil {
		return nil, err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[c.key(name)]
	if !ok {
		return nil, notFound(name)
	}
	return l.DeepCopy(), nil
}

// Create stores a new Lease, or fails with AlreadyExists.
func (c *leaseClient) Create(ctx context.Context, lease *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	if err := c.server.serve(ctx, c.req("create", lease.Name, lease)); err != nil {
		return nil, err
	}
	if lease.ResourceVersion != "" {
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	key := c.key(lease.Name)
	if _, ok := s.leases[key]; ok {
		return nil, apierrors.NewAlreadyExists(leaseResource, lease.Name)
	}
	stored := lease.DeepCopy()
	if err := s.prepareLocked(stored, nil); err != nil {
		return nil, err
	}
	stored.Namespace = c.namespace
	stored.UID = uuid.NewUUID()
	stored.CreationTimestamp = metav1.NewTime(time.Now())
	return s.storeLocked(key, stored, watch.Added), nil
}

// Update replaces the Lease if and only if its resourceVersion matches.
func (c *leaseClient) Update(ctx context.Context, lease *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if err := c.server.serve(ctx, c.req("update", lease.Name, lease)); err != nil {
		return nil, err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	key := c.key(lease.Name)
	cur, ok := s.leases[key]
	switch {
	case !ok:
		return nil, notFound(lease.Name)
	case lease.ResourceVersion == "":
		// kube-apiserver allows unconditional updates of Leases; this
		// kit refuses them, so that a test catches a blind overwrite.
		return nil, apierrors.NewBadRequest("leaseholdtest: update without resourceVersion is a blind overwrite")
	case lease.ResourceVersion != cur.ResourceVersion:
		return nil, conflict(lease.Name, "the object has been modified; please apply your changes to the latest version and try again")
	case lease.UID != "" && lease.UID != cur.UID:
		return nil, conflict(lease.Name, "Precondition failed: UID in precondition: "+string(lease.UID)+", UID in object meta: "+string(cur.UID))
	}
	stored := lease.DeepCopy()
	if err := s.prepareLocked(stored, cur); err != nil {
		return nil, err
	}
	stored.Namespace = c.namespace
	stored.UID = cur.UID
	stored.CreationTimestamp = cur.CreationTimestamp
	return s.storeLocked(key, stored, watch.Modified), nil
}

// Delete removes the Lease or returns 404.
func (c *leaseClient) Delete(ctx context.Context, name string, _ metav1.DeleteOptions) error {
	if err := c.server.serve(ctx, c.req("delete", name, nil)); err != nil {
		return err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leases[c.key(name)]; !ok {
		return notFound(name)
	}
	s.deleteLocked(c.key(name))
	return nil
}

// DeleteCollection removes every Lease of the namespace that matches.
func (c *leaseClient) DeleteCollection(ctx context.Context, _ metav1.DeleteOptions, opts metav1.ListOptions) error {
	if err := c.server.serve(ctx, c.req("deletecollection", "", nil)); err != nil {
		return err
	}
	sel, err := parseSelector(opts)
	if err != nil {
		return err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.sortedKeysLocked(c.namespace) {
		if matches(sel, s.leases[k]) {
			s.deleteLocked(k)
		}
	}
	return nil
}

// List returns the namespace's Leases that match the field selector.
func (c *leaseClient) List(ctx context.Context, opts metav1.ListOptions) (*coordinationv1.LeaseList, error) {
	if err := c.server.serve(ctx, c.req("list", "", nil)); err != nil {
		return nil, err
	}
	sel, err := parseSelector(opts)
	if err != nil {
		return nil, err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	list := &coordinationv1.LeaseList{ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatInt(s.rv, 10)}}
	for _, k := range s.sortedKeysLocked(c.namespace) {
		if l := s.leases[k]; matches(sel, l) {
			list.Items = append(list.Items, *l.DeepCopy())
		}
	}
	return list, nil
}

// Watch streams changes of the namespace's Leases that match the field
// selector. With a resourceVersion it first replays the kept history after
// that version, or fails with 410 Gone if the history no longer reaches
// back to it. Without one it starts with an ADDED event per current Lease.
func (c *leaseClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	if err := c.server.serve(ctx, c.req("watch", "", nil)); err != nil {
		return nil, err
	}
	sel, err := parseSelector(opts)
	if err != nil {
		return nil, err
	}
	s := c.server
	s.mu.Lock()
	defer s.mu.Unlock()
	// The replay is never dropped, as kube-apiserver sends a watch's
	// initial events whatever their number: the buffer holds them all
	// and room for watchBuffer more.
	var replay []event
	switch rv := opts.ResourceVersion; rv {
	case "", "0":
		for _, k := range s.sortedKeysLocked(c.namespace) {
			replay = append(replay, event{rv: s.rv, typ: watch.Added, lease: s.leases[k].DeepCopy()})
		}
	default:
		from, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest("invalid resourceVersion " + rv)
		}
		if from <= s.compact || (s.oldest > 0 && from+1 < s.oldest) {
			return nil, apierrors.NewResourceExpired("too old resource version: " + rv)
		}
		for _, ev := range s.history {
			if ev.rv > from {
				replay = append(replay, ev)
			}
		}
	}
	w := newWatcher(s, c.namespace, sel, len(replay))
	for _, ev := range replay {
		w.sendLocked(ev)
	}
	s.watchers[w] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
			w.Stop()
		case <-w.done:
		}
	}()
	return w, nil
}

// Patch is not supported: an election must not patch a Lease blindly.
func (c *leaseClient) Patch(_ context.Context, name string, _ types.PatchType, _ []byte, _ metav1.PatchOptions, _ ...string) (*coordinationv1.Lease, error) {
	return nil, apierrors.NewMethodNotSupported(leaseResource, "patch")
}

// Apply is not supported: an election must not apply a Lease blindly.
func (c *leaseClient) Apply(_ context.Context, _ *coordinationv1apply.LeaseApplyConfiguration, _ metav1.ApplyOptions) (*coordinationv1.Lease, error) {
	return nil, apierrors.NewMethodNotSupported(leaseResource, "apply")
}
