package leasehold

import (
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/retry"
)

// newStreak returns the streak that logs a run of failures of one
// operation (internal/retry), telling health, if set, of every failure
// that means the API server did not answer, and of every success.
func newStreak(c clock.PassiveClock, log logr.Logger, msg string, health *apiHealth) *retry.Streak {
	s := retry.NewStreak(c, log, msg)
	if health != nil {
		s.OnFailure = func(err error) {
			if unreachable(err) {
				health.failed(c.Now())
			}
		}
		s.OnSuccess = health.succeeded
	}
	return s
}
