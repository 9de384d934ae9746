// Package leaseholdtest is a test kit for code that elects a leader through
// Leases: an in-memory Lease API that behaves like kube-apiserver where an
// election depends on it, and that client-go's fake clientset does not:
//
//   - every write is compare-and-swap on resourceVersion: an Update whose
//     resourceVersion is stale fails with 409 Conflict, an Update without
//     one is rejected, and a Create of an existing name fails with 409
//     AlreadyExists;
//   - resourceVersions increase across the whole server, as etcd's do;
//   - Watch honours a metadata.name field selector, resumes from a
//     resourceVersion, and answers 410 Gone for one older than the kept
//     history (see Compact);
//   - hooks inject errors, latency and hangs per request, per verb, per
//     client;
//   - spec.strategy and spec.preferredHolder are kept, dropped or refused
//     as kube-apiserver does with its CoordinatedLeaderElection gate on or
//     off (see Server.SetCoordinatedLeaderElection);
//   - every request is counted, per verb and per client.
//
// Use it as LeaseLock.Client:
//
//	srv := leaseholdtest.NewServer()
//	lock := &leasehold.LeaseLock{Namespace: "ns", Name: "lock", Identity: "a", Client: srv.Client("a")}
package leaseholdtest

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

var leaseResource = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// Request describes one API request, as a Hook sees it.
type Request struct {
	// Client is the name given to Server.Client.
	Client string
	// Verb is one of get, list, watch, create, update, delete.
	Verb      string
	Namespace string
	Name      string
	// Lease is the object sent with a create or update, nil otherwise.
	Lease *coordinationv1.Lease
}

// Hook runs before a request is served. A non-nil error is returned to the
// client instead of serving it. A hook may block to add latency or to hang
// the request; it should then return ctx.Err() when ctx is done, as a real
// client's request would fail.
type Hook func(ctx context.Context, req Request) error

// Server is an in-memory Lease API. Its methods are safe for concurrent use.
type Server struct {
	mu       sync.Mutex
	rv       int64
	leases   map[types.NamespacedName]*coordinationv1.Lease
	history  []event // events kept for resuming watches
	oldest   int64   // the oldest event kept in history
	compact  int64   // watches from resourceVersions <= compact get 410 Gone
	watchers map[*watcher]struct{}
	hooks    []Hook
	requests map[string]map[string]int // client -> verb -> count
	inFlight int
	maxKept  int
	gateOff  bool // see SetCoordinatedLeaderElection
}

type event struct {
	rv    int64
	typ   watch.EventType
	lease *coordinationv1.Lease
}

// NewServer returns an empty Server.
func NewServer() *Server {
	return &Server{
		leases:   map[types.NamespacedName]*coordinationv1.Lease{},
		watchers: map[*watcher]struct{}{},
		requests: map[string]map[string]int{},
		maxKept:  1000,
	}
}

// Client returns a LeasesGetter whose requests are attributed to name, for
// hooks and request counts. It satisfies
// k8s.io/client-go/kubernetes/typed/coordination/v1.LeasesGetter.
func (s *Server) Client(name string) *Client {
	return &Client{server: s, name: name}
}

// AddHook adds a hook run before every request. Hooks run in the order
// added; the first error wins.
func (s *Server) AddHook(h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, h)
}

// ClearHooks removes every hook.
func (s *Server) ClearHooks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = nil
}

// Requests returns how many requests of verb the named client made.
// An empty client counts all clients; an empty verb counts all verbs.
func (s *Server) Requests(client, verb string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c, verbs := range s.requests {
		if client != "" && c != client {
			continue
		}
		for v, k := range verbs {
			if verb == "" || v == verb {
				n += k
			}
		}
	}
	return n
}

// Lease returns a copy of the stored Lease, or nil if there is none.
func (s *Server) Lease(namespace, name string) *coordinationv1.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.leases[types.NamespacedName{Namespace: namespace, Name: name}]; ok {
		return l.DeepCopy()
	}
	return nil
}

// Put stores lease as is (creating or replacing it, bypassing
// compare-and-swap) and notifies watchers, as another writer would. It
// returns the stored copy with its new resourceVersion. A new UID is set if
// the Lease had none.
func (s *Server) Put(lease *coordinationv1.Lease) *coordinationv1.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := types.NamespacedName{Namespace: lease.Namespace, Name: lease.Name}
	_, existed := s.leases[key]
	stored := lease.DeepCopy()
	if stored.UID == "" {
		stored.UID = uuid.NewUUID()
	}
	typ := watch.Modified
	if !existed {
		typ = watch.Added
	}
	return s.storeLocked(key, stored, typ)
}

// Delete removes the Lease, bypassing hooks, and notifies watchers.
func (s *Server) Delete(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(types.NamespacedName{Namespace: namespace, Name: name})
}

// Compact forgets the watch history, so that a watch resuming from any
// resourceVersion seen so far gets 410 Gone, as after an etcd compaction.
func (s *Server) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = nil
	s.compact = s.rv
}

// ExpireWatches compacts the history (see Compact) and ends every open
// watch with an ERROR event carrying 410 Gone, as kube-apiserver does when a
// watcher's resourceVersion falls out of its window.
func (s *Server) ExpireWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = nil
	s.compact = s.rv
	gone := apierrors.NewResourceExpired("too old resource version").Status()
	for w := range s.watchers {
		select {
		case w.ch <- watch.Event{Type: watch.Error, Object: &gone}:
		default:
		}
		w.closeLocked()
	}
}

// CloseWatches ends every open watch, as an API server restart or a load
// balancer timeout would. Clients may resume from their last
// resourceVersion.
func (s *Server) CloseWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		w.closeLocked()
	}
}

// Watches returns the number of open watches.
func (s *Server) Watches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers)
}

// serve counts the request and runs the hooks.
func (s *Server) serve(ctx context.Context, req Request) error {
	s.mu.Lock()
	if s.requests[req.Client] == nil {
		s.requests[req.Client] = map[string]int{}
	}
	s.requests[req.Client][req.Verb]++
	hooks := append([]Hook(nil), s.hooks...)
	s.inFlight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	for _, h := range hooks {
		if err := h(ctx, req); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// InFlight returns the number of requests whose hooks are still running.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

func (s *Server) storeLocked(key types.NamespacedName, lease *coordinationv1.Lease, typ watch.EventType) *coordinationv1.Lease {
	s.rv++
	lease.ResourceVersion = strconv.FormatInt(s.rv, 10)
	s.leases[key] = lease
	s.recordLocked(event{rv: s.rv, typ: typ, lease: lease.DeepCopy()})
	return lease.DeepCopy()
}

func (s *Server) deleteLocked(key types.NamespacedName) {
	old, ok := s.leases[key]
	if !ok {
		return
	}
	delete(s.leases, key)
	s.rv++
	gone := old.DeepCopy()
	gone.ResourceVersion = strconv.FormatInt(s.rv, 10)
	s.recordLocked(event{rv: s.rv, typ: watch.Deleted, lease: gone})
}

func (s *Server) recordLocked(ev event) {
	s.history = append(s.history, ev)
	if len(s.history) > s.maxKept {
		s.history = s.history[len(s.history)-s.maxKept:]
		s.oldest = s.history[0].rv
	}
	for w := range s.watchers {
		w.sendLocked(ev)
	}
}

// Client is one client of a Server, satisfying client-go's LeasesGetter.
type Client struct {
	server *Server
	name   string
}

// Leases returns the Lease interface for a namespace.
func (c *Client) Leases(namespace string) coordinationv1client.LeaseInterface {
	return &leaseClient{server: c.server, client: c.name, namespace: namespace}
}

// sortedKeys lists a namespace's lease names in order, for List.
func (s *Server) sortedKeysLocked(namespace string) []types.NamespacedName {
	var keys []types.NamespacedName
	for k := range s.leases {
		if k.Namespace == namespace {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys
}

func notFound(name string) error { return apierrors.NewNotFound(leaseResource, name) }

func conflict(name, why string) error {
	return apierrors.NewConflict(leaseResource, name, fmt.Errorf("%s", why))
}

func matches(sel fields.Selector, l *coordinationv1.Lease) bool {
	return sel.Matches(fields.Set{"metadata.name": l.Name, "metadata.namespace": l.Namespace})
}

func parseSelector(opts metav1.ListOptions) (fields.Selector, error) {
	if opts.FieldSelector == "" {
		return fields.Everything(), nil
	}
	sel, err := fields.ParseSelector(opts.FieldSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	return sel, nil
}
