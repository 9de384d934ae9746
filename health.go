package leasehold

import (
	"fmt"
	"net/http"
	"time"
)

// HealthHandler serves Check(maxTolerableExpiredLease) over HTTP for a
// liveness probe: 200 "ok" when healthy, 500 with the reason otherwise.
//
// Use it for liveness, not readiness: followers are healthy, and gating
// readiness on leadership keeps all but one replica unready, which stalls
// rolling updates.
func (e *Elector) HealthHandler(maxTolerableExpiredLease time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := e.Check(maxTolerableExpiredLease); err != nil {
			http.Error(w, fmt.Sprintf("leader election: %v", err), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
}
