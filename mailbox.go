package leasehold

import (
	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// The mailbox through which the observer, a shared watch and the
// elector's own reads hand what they saw of the Lease to Run's goroutine:
// newest wins, and what a newer observation superseded travels with it.

// observation is one thing the observer learned about the Lease.
type observation struct {
	// lease is the Lease as seen; nil if it does not exist.
	lease *coordinationv1.Lease
	// deleted is set for a watched deletion, and unset when a GET found
	// no Lease, whose moment is unknown.
	deleted bool
	// deletedRV is the resourceVersion of a watched deletion ("" on a
	// server that returns none).
	deletedRV string
	// final is the deleted object's last state, as a DELETE event carries
	// it; nil for a GET that found nothing.
	final *coordinationv1.Lease
	// fresh is set for a read made after this process's last write had
	// been answered (a re-read after a lost race): a Lease it does not
	// find is gone, even if the view shows our own write.
	fresh bool
	// superseded are the Leases of the observations this one replaced in
	// the mailbox before anyone took them (oldest first, at most
	// maxSuperseded). A reader that was busy with a write learns what
	// happened meanwhile from them (run.heldBack).
	superseded []*coordinationv1.Lease
}

// maxSuperseded bounds observation.superseded.
const maxSuperseded = 4

// seen returns the Lease an observation shows: the Lease, or for a
// deletion the deleted object's last state (nil if unknown).
func (o observation) seen() *coordinationv1.Lease {
	if o.lease != nil {
		return o.lease
	}
	return o.final
}

// supersede returns obs carrying old's Lease and what old superseded.
func supersede(obs, old observation) observation {
	list := append(append([]*coordinationv1.Lease(nil), old.superseded...), obs.superseded...)
	if l := old.seen(); l != nil {
		list = append(list, l)
	}
	if len(list) > maxSuperseded {
		list = list[len(list)-maxSuperseded:]
	}
	obs.superseded = list
	return obs
}

// mailbox holds the newest observation not yet taken. Putting never
// blocks: a newer observation replaces an untaken older one, which it
// supersedes (and carries, see observation.superseded). So a reader that is busy (a term ending, a slow callback)
// never stalls the watch feeding it, and never reads a backlog. At most
// two goroutines put into one mailbox (an observer's GET and a shared
// watch); one takes.
type mailbox chan observation

func newMailbox() mailbox { return make(mailbox, 1) }

// put stores obs, replacing an observation not yet taken unless that one
// is of a newer Lease (a GET's answer can arrive after a watch event).
func (m mailbox) put(obs observation) {
	for {
		select {
		case m <- obs:
			return
		default:
		}
		select {
		case old := <-m:
			if old.lease != nil && obs.lease != nil && old.lease.ResourceVersion != "" && obs.lease.ResourceVersion != "" &&
				leaserecord.NewerVersion(old.lease.ResourceVersion, obs.lease.ResourceVersion) {
				obs = supersede(old, obs) // keep the newer; without versions, the last put wins
			} else {
				obs = supersede(obs, old)
			}
		default:
		}
	}
}
