package plugin

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/shard"
)

// ShardGroupStatus is a leasehold shard group as its assignment Lease
// records it (shard.ReadStatus), with the state of each member's
// membership Lease. status shows it on the assignment Lease: the Lease
// named after the group, labelled leasehold.dev/shard-group.
type ShardGroupStatus struct {
	// Shards is K, the number of shards.
	Shards  int                 `json:"shards"`
	Members []ShardMemberStatus `json:"members"`
	// Unowned are the shards nobody runs (in flight between two members,
	// or without a live member).
	Unowned []int `json:"unowned,omitempty"`
	// PendingMoves counts the shards whose owner is not their target.
	PendingMoves int `json:"pendingMoves"`
}

// ShardMemberStatus is one member of a shard group.
type ShardMemberStatus struct {
	Identity string `json:"identity"`
	// Owned are the shards the member owns: only it may run them.
	Owned []int `json:"owned"`
	// Targeted are the shards assigned to it; it runs them once it owns
	// them.
	Targeted []int `json:"targeted"`
	// Leaving is set while the member hands its shards over to leave.
	Leaving bool `json:"leaving,omitempty"`
	// MemberLease is the name of the member's membership Lease.
	MemberLease string `json:"memberLease"`
	// Membership is the state of that Lease: "held" (by the member, within
	// its lease duration as seen now), "expired", "not held", "missing"
	// (no such Lease) or "unknown" (it could not be read).
	Membership string `json:"membership"`
	// SinceRenewal is how long ago the member renewed its membership.
	SinceRenewal *metav1.Duration `json:"sinceRenewal,omitempty"`
}

// Membership states.
const (
	membershipHeld    = "held"
	membershipExpired = "expired"
	membershipNotHeld = "not held"
	membershipMissing = "missing"
	membershipUnknown = "unknown"
)

// isAssignment says whether l is the assignment Lease of a shard group.
func isAssignment(l *coordinationv1.Lease) bool {
	_, ok := l.Annotations[shard.AnnotationAssignment]
	return ok
}

// shardGroupOf reads the group recorded in the assignment Lease l, looking
// up its members' Leases in byName (namespace/name; nil if they could not
// be read).
func shardGroupOf(l *coordinationv1.Lease, byName map[string]*coordinationv1.Lease, now time.Time) (*ShardGroupStatus, error) {
	st, err := shard.ReadStatus(l)
	if err != nil {
		return nil, err
	}
	g := &ShardGroupStatus{Shards: st.Shards, Unowned: st.Unowned, PendingMoves: len(st.Moves)}
	for _, m := range st.Members {
		ms := ShardMemberStatus{
			Identity:    m.Identity,
			Owned:       nonNil(m.Owned),
			Targeted:    nonNil(m.Targeted),
			Leaving:     m.Leaving,
			MemberLease: shard.MemberLeaseName(st.Group, m.Identity),
			Membership:  membershipUnknown,
		}
		if byName != nil {
			ml, ok := byName[leaseRef(l.Namespace, ms.MemberLease)]
			switch {
			case !ok:
				ms.Membership = membershipMissing
			case leaserecord.Holder(ml) != m.Identity:
				ms.Membership = membershipNotHeld
			default:
				s := statusOf(ml, now)
				ms.SinceRenewal = s.SinceRenewal
				ms.Membership = membershipHeld
				if s.Expired {
					ms.Membership = membershipExpired
				}
			}
		}
		g.Members = append(g.Members, ms)
	}
	return g, nil
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// printShardGroups prints a table of the members of the shard groups among
// statuses, if any.
func printShardGroups(w io.Writer, statuses []LeaseStatus, withNamespace, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	printed := false
	for i := range statuses {
		s := &statuses[i]
		if s.ShardAssignment == nil && s.ShardAssignmentError == "" {
			continue
		}
		if !printed {
			fmt.Fprintln(w)
			header := "GROUP\tSHARDS\tMEMBER\tOWNED\tTARGETED\tMEMBERSHIP"
			if wide {
				header += "\tOWNED SHARDS\tMEMBER LEASE"
			}
			if withNamespace {
				header = "NAMESPACE\t" + header
			}
			fmt.Fprintln(tw, header)
			printed = true
		}
		row := func(cells ...string) {
			if withNamespace {
				cells = append([]string{s.Namespace}, cells...)
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		g := s.ShardAssignment
		if g == nil {
			row(s.Name, "?", "<unreadable: "+s.ShardAssignmentError+">", "", "", "")
			continue
		}
		k := strconv.Itoa(g.Shards)
		for _, m := range g.Members {
			membership := m.Membership
			if m.SinceRenewal != nil && (m.Membership == membershipHeld || m.Membership == membershipExpired) {
				membership = "renewed " + humanDuration(m.SinceRenewal.Duration) + " ago"
				if m.Membership == membershipExpired {
					membership += " (expired)"
				}
			}
			if m.Leaving {
				membership += ", leaving"
			}
			cells := []string{s.Name, k, m.Identity, strconv.Itoa(len(m.Owned)), strconv.Itoa(len(m.Targeted)), membership}
			if wide {
				cells = append(cells, orNone(shardRanges(m.Owned)), m.MemberLease)
			}
			row(cells...)
		}
		if len(g.Unowned) > 0 {
			cells := []string{s.Name, k, "<unowned>", strconv.Itoa(len(g.Unowned)), "-", "-"}
			if wide {
				cells = append(cells, shardRanges(g.Unowned), "-")
			}
			row(cells...)
		}
	}
	return tw.Flush()
}

// shardRanges prints sorted shard numbers compactly: 0-3,7,9-10.
func shardRanges(shards []int) string {
	var parts []string
	for i := 0; i < len(shards); {
		j := i
		for j+1 < len(shards) && shards[j+1] == shards[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(shards[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", shards[i], shards[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
