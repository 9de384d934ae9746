package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unsafe"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ErrUngatedRunnable is wrapped by Gate.Start's error when the manager
// itself holds runnables that need a leader, typically a controller built
// with ctrl.NewControllerManagedBy(mgr) instead of
// ctrl.NewControllerManagedBy(gate.Manager()). With LeaderElection: false
// the manager would run them on every replica at once.
var ErrUngatedRunnable = errors.New("leasehold/controllerruntime: leader-only runnables were added to the manager itself, not through the gate")

// ErrManagerLeaderElection is wrapped by Gate.Start's error when the
// manager was created with LeaderElection: true: it would run a second,
// independent election of its own, and stop when that one is lost.
var ErrManagerLeaderElection = errors.New("leasehold/controllerruntime: the manager runs its own leader election")

// managerPkg and managerName name controller-runtime's manager
// implementation, the one whose runnables the start check reads.
const managerPkg, managerName = "sigs.k8s.io/controller-runtime/pkg/manager", "controllerManager"

// refusedMessage is what controller-runtime's mgr.Add answers for a
// leader-only runnable once the Gate has sealed the manager's
// leader-election group (errRunnableGroupStopped in its manager package).
const refusedMessage = "can't accept new runnable as stop procedure is already engaged"

// startCheck finds leader-only work that the manager itself would run, and
// makes sure the manager never runs any: it seals the manager's
// leader-election group.
//
// controller-runtime exports no list of a manager's runnables, so the check
// reads its unexported bookkeeping by reflection: whether it has a resource
// lock, and which runnables wait in its leader-election group. It reads
// them at the one moment that is free of races: New adds the check to the
// manager as a runnable with a cache, and the manager waits for every
// cache's WaitForCacheSync while it holds its lock (so no runnable is
// being added) and before it starts its leader-election group (so the
// group's queue still lists every runnable in it). Gate.Start, which the
// manager runs after its caches, reports the result.
//
// At that same moment the check seals the group, the one write it makes
// (see seal): the manager never starts it, so a runnable found there never
// runs, not even while the manager stops because of it, and mgr.Add
// refuses every leader-only runnable from then on, with controller-runtime's
// own error (refusedMessage). Without the seal, a controller built with
// ctrl.NewControllerManagedBy(mgr) after mgr.Start would start at once on
// every replica.
type startCheck struct {
	mgr manager.Manager
	// runnable is added to the manager; nil when the manager cannot be
	// inspected, and skipped says why.
	runnable manager.Runnable
	skipped  string

	mu   sync.Mutex
	ran  bool   // the manager ran the check
	err  error  // what the check found
	warn string // why the check could not conclude, if it could not
}

// newStartCheck prepares the check for mgr. It does not add it to mgr.
func newStartCheck(mgr manager.Manager) *startCheck {
	c := &startCheck{mgr: mgr}
	if why := checkLayout(reflect.TypeOf(mgr)); why != "" {
		c.skipped = why
		return c
	}
	// The manager sets started under its own lock, which its embedded
	// sync.Mutex exports; a manager that has started has queued its
	// leader-election group already, so the check would come too late.
	if l, ok := mgr.(sync.Locker); ok {
		l.Lock()
		started := reflect.ValueOf(mgr).Elem().FieldByName("started").Bool()
		l.Unlock()
		if started {
			c.skipped = "the manager had started before the Gate was built; build the Gate before calling mgr.Start"
			return c
		}
	}
	c.runnable = &checkRunnable{check: c, cache: mgr.GetCache()}
	return c
}

// checkLayout returns "" if t is controller-runtime's manager as this
// package knows it (v0.25), or what differs.
func checkLayout(t reflect.Type) string {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().PkgPath() != managerPkg || t.Elem().Name() != managerName {
		return fmt.Sprintf("the manager is a %v, not controller-runtime's own", t)
	}
	changed := "this controller-runtime release keeps the manager's runnables differently from v0.25"
	m := t.Elem()
	if _, ok := field(m, "started", reflect.Bool); !ok {
		return changed
	}
	if _, ok := field(m, "resourceLock", reflect.Interface); !ok {
		return changed
	}
	rs, ok := field(m, "runnables", reflect.Pointer)
	if !ok {
		return changed
	}
	group, ok := field(rs.Elem(), "LeaderElection", reflect.Pointer)
	if !ok {
		return changed
	}
	if _, ok := field(group.Elem(), "started", reflect.Bool); !ok {
		return changed
	}
	// What seal writes: the group's sync.Once that starts it, and its
	// stopped flag with the lock that guards it.
	if _, ok := field(group.Elem(), "stopped", reflect.Bool); !ok {
		return changed
	}
	if f, ok := group.Elem().FieldByName("startOnce"); !ok || f.Type != reflect.TypeFor[sync.Once]() {
		return changed
	}
	if f, ok := group.Elem().FieldByName("stop"); !ok || f.Type != reflect.TypeFor[sync.RWMutex]() {
		return changed
	}
	queue, ok := field(group.Elem(), "startQueue", reflect.Slice)
	if !ok || queue.Elem().Kind() != reflect.Pointer {
		return changed
	}
	if r, ok := field(queue.Elem().Elem(), "Runnable", reflect.Interface); !ok || r != reflect.TypeFor[manager.Runnable]() {
		return changed
	}
	return ""
}

// field returns the type of the field name of struct type t, if t is a
// struct and the field is of kind k.
func field(t reflect.Type, name string, k reflect.Kind) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	f, ok := t.FieldByName(name)
	if !ok || f.Type.Kind() != k {
		return nil, false
	}
	return f.Type, true
}

// run inspects the manager and seals its leader-election group. The
// manager calls it (through checkCache.WaitForCacheSync, with ctx) while
// starting its caches, holding its lock.
func (c *startCheck) run(ctx context.Context) {
	var errs []error
	warn := ""
	v := reflect.ValueOf(c.mgr).Elem()
	if !v.FieldByName("resourceLock").IsNil() {
		errs = append(errs, fmt.Errorf("%w: create it with ctrl.Options{LeaderElection: false}; the Gate elects", ErrManagerLeaderElection))
	}
	rs := v.FieldByName("runnables")
	if rs.IsNil() || rs.Elem().FieldByName("LeaderElection").IsNil() {
		warn = "the manager has no leader-election group"
	} else if group := rs.Elem().FieldByName("LeaderElection").Elem(); group.FieldByName("started").Bool() {
		warn = "the manager had started its leader-election group before its caches"
	} else {
		seal(group)
		logger := c.mgr.GetLogger()
		if l, err := logr.FromContext(ctx); err == nil {
			logger = l
		}
		logger.Info("The manager's own leader-election group is sealed: leader-only runnables run through the Gate only. " +
			"mgr.Add of a leader-only runnable now fails with \"" + refusedMessage + "\": add it with gate.Manager().Add, " +
			"or build the controller with ctrl.NewControllerManagedBy(gate.Manager())")
		queue := group.FieldByName("startQueue")
		var ungated []string
		for i := range queue.Len() {
			item := queue.Index(i)
			if item.IsNil() {
				continue
			}
			if r := item.Elem().FieldByName("Runnable"); !r.IsNil() {
				ungated = append(ungated, describe(r.Elem()))
			}
		}
		if len(ungated) > 0 {
			errs = append(errs, fmt.Errorf("%w: %s. With LeaderElection: false the manager runs them on every replica at once. "+
				"Build controllers with ctrl.NewControllerManagedBy(gate.Manager()), not ctrl.NewControllerManagedBy(mgr); "+
				"add other leader-only runnables with gate.Manager().Add; "+
				"a runnable meant for every replica must implement manager.LeaderElectionRunnable and return false",
				ErrUngatedRunnable, strings.Join(ungated, ", ")))
		}
	}
	c.mu.Lock()
	c.ran, c.err, c.warn = true, errors.Join(errs...), warn
	c.mu.Unlock()
}

// seal makes controller-runtime's runnable group (a runnableGroup struct,
// addressable) never start and refuse what is added to it, as the
// manager's own shutdown does to a group it never started: it uses up the
// group's startOnce, so that the manager's Start of the group does
// nothing, and sets stopped under the group's stop lock, so that the
// group's Add returns errRunnableGroupStopped. checkLayout has checked the
// fields' types. The caller holds the manager's lock: no Add is under way.
func seal(group reflect.Value) {
	once := (*sync.Once)(unsafe.Pointer(group.FieldByName("startOnce").UnsafeAddr()))
	once.Do(func() {})
	stop := (*sync.RWMutex)(unsafe.Pointer(group.FieldByName("stop").UnsafeAddr()))
	stopped := (*bool)(unsafe.Pointer(group.FieldByName("stopped").UnsafeAddr()))
	stop.Lock()
	*stopped = true
	stop.Unlock()
}

// describe names a runnable for an error: its type, and its name if it has
// one (a controller has).
func describe(v reflect.Value) string {
	typ := v.Type().String()
	s := v
	if s.Kind() == reflect.Pointer && !s.IsNil() {
		s = s.Elem()
	}
	if s.Kind() == reflect.Struct {
		if f, ok := s.Type().FieldByName("Name"); ok && len(f.Index) == 1 && f.Type.Kind() == reflect.String {
			if name := s.Field(f.Index[0]).String(); name != "" {
				return fmt.Sprintf("%q (%s)", name, typ)
			}
		}
	}
	return typ
}

// result returns what the check found; when it could not conclude, it
// logs a warning to logger and returns nil.
func (c *startCheck) result(logger klog.Logger) error {
	c.mu.Lock()
	ran, err, why := c.ran, c.err, c.warn
	c.mu.Unlock()
	switch {
	case err != nil:
		return err
	case c.skipped != "":
		why = c.skipped
	case !ran:
		why = "the manager did not start the Gate's check with its caches: start the Gate through mgr.Start"
	}
	if why != "" {
		logger.Error(nil, "WARNING: cannot check that no leader-only runnable was added to the manager itself, nor refuse one added later. "+
			"A controller built with ctrl.NewControllerManagedBy(mgr) instead of ctrl.NewControllerManagedBy(gate.Manager()) "+
			"runs on every replica at once", "reason", why)
	}
	return nil
}

// checkRunnable is the start check as the manager sees it: a runnable with
// a cache, whose WaitForCacheSync the manager calls while starting its
// caches. It does nothing when started.
type checkRunnable struct {
	check *startCheck
	cache cache.Cache
}

// Start returns at once; the work is done in the cache's WaitForCacheSync.
func (r *checkRunnable) Start(context.Context) error { return nil }

// GetCache returns the manager's cache, with WaitForCacheSync running the
// check.
func (r *checkRunnable) GetCache() cache.Cache { return checkCache{Cache: r.cache, check: r.check} }

// checkCache is the manager's cache whose WaitForCacheSync runs the check.
type checkCache struct {
	cache.Cache
	check *startCheck
}

// WaitForCacheSync runs the check and reports the cache ready: the real
// cache's sync is waited for by the manager on its own account.
func (c checkCache) WaitForCacheSync(ctx context.Context) bool {
	c.check.run(ctx)
	return true
}
