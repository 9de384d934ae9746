package leasehold

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// candidacyRecorder is a Metrics that also implements CandidacyMetrics and
// records the states it is told.
type candidacyRecorder struct {
	noMetrics
	mu     sync.Mutex
	states []string
}

func (m *candidacyRecorder) Candidacy(_ string, state string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states = append(m.states, state)
}

func (m *candidacyRecorder) got() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprint(m.states)
}

// A coordinated elector reports its candidacy's state when it changes: a
// candidate once registered; no-controller once it campaigns for a free
// Lease nobody assigned; a candidate again when the controller assigns it
// a term; withdrawn when Run ends. Where the LeaseCandidate API is not
// served: unsupported.
func TestCandidacyMetrics(t *testing.T) {
	t.Run("candidate, no controller, assigned, withdrawn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := newCoordinatedWorld(t)
			m := &candidacyRecorder{}
			a := w.coordinated("a", "1.31.0", "", func(c *Config) { c.Metrics = m; c.ReleaseOnCancel = true }).start()
			w.advance(time.Second)
			if got := m.got(); got != "[candidate]" {
				t.Fatalf("states %s after registering, want [candidate]", got)
			}
			w.advance(controllerGrace + 2*time.Second)
			a.waitLeader()
			if got := m.got(); got != "[candidate no-controller]" {
				t.Fatalf("states %s after campaigning without a controller, want [candidate no-controller]", got)
			}
			// The controller comes: it names a better candidate, and a
			// hands the Lease back; then it assigns the Lease to a.
			w.prefer("b")
			eventually(t, "a hands the Lease back", func() bool { return !a.e.IsLeader() && leaserecord.Holder(w.lease()) == "" })
			w.assign("a")
			a.waitLeader()
			a.cancel()
			if err := a.wait(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			if got := m.got(); got != "[candidate no-controller candidate withdrawn]" {
				t.Fatalf("states %s, want [candidate no-controller candidate withdrawn]", got)
			}
		})
	})
	t.Run("unsupported", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := newCoordinatedWorld(t)
			w.cs.PrependReactor("*", "leasecandidates", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, missingAPI()
			})
			m := &candidacyRecorder{}
			a := w.coordinated("a", "1.31.0", "", func(c *Config) { c.Metrics = m }).start()
			a.waitLeader()
			if got := m.got(); got != "[unsupported]" {
				t.Fatalf("states %s, want [unsupported]", got)
			}
		})
	})
}
