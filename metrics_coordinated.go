package leasehold

import "sync"

// CandidacyMetrics is an optional extension of Metrics for coordinated
// elections (NewCoordinated): a Config.Metrics that also implements it
// learns the state of the process's candidacy. Every method must be cheap
// and must not block; name is Config.Name.
type CandidacyMetrics interface {
	// Candidacy reports the candidacy's state, one of the Candidacy*
	// constants, when it changes.
	Candidacy(name, state string)
}

// Candidacy states reported to CandidacyMetrics.Candidacy.
const (
	// CandidacyCandidate: the process keeps a LeaseCandidate (registered,
	// or its registration is retried in the background) and the election
	// controller picks the leader.
	CandidacyCandidate = "candidate"
	// CandidacyUnsupported: the LeaseCandidate API is not served; the
	// process campaigns as New's Elector does.
	CandidacyUnsupported = "unsupported"
	// CandidacyNoController: no election controller named a holder of a
	// free Lease within 20 seconds, and the process campaigned for it
	// directly (kube-apiserver's CoordinatedLeaderElection gate is off?).
	// It is a candidate again once the controller assigns a term.
	CandidacyNoController = "no-controller"
	// CandidacyWithdrawn: Run's ctx was cancelled and the LeaseCandidate
	// withdrawn.
	CandidacyWithdrawn = "withdrawn"
)

// CandidacyStates lists every candidacy state, for implementations that
// create their series up front.
func CandidacyStates() []string {
	return []string{CandidacyCandidate, CandidacyUnsupported, CandidacyNoController, CandidacyWithdrawn}
}

// candidacyReporter returns the function coordinated election reports its
// candidacy's state with: Config.Metrics's, or one that does nothing.
func (e *Elector) candidacyReporter() func(state string) {
	m, ok := e.cfg.Metrics.(CandidacyMetrics)
	if !ok {
		return func(string) {}
	}
	name := e.cfg.Name
	var mu sync.Mutex
	last := ""
	return func(state string) {
		mu.Lock()
		defer mu.Unlock()
		if state != last {
			last = state
			m.Candidacy(name, state)
		}
	}
}
