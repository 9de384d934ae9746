package shard

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names the group's Leases carry. They are stable: tools may rely on them.
const (
	// LabelGroup is set, with the group's name as value, on the group's
	// assignment Lease and on every member Lease while its member is in
	// the group. Members follow the group through one watch with this
	// label selector.
	LabelGroup = "leasehold.dev/shard-group"

	// AnnotationAssignment holds the assignment on the assignment Lease,
	// as JSON (see ReadStatus). Only members write it, and only with
	// compare-and-swap.
	AnnotationAssignment = "leasehold.dev/shard-assignment"
)

// assignment is the content of the assignment Lease: per shard, the owner
// (the member that may run it; "" for none) and the target (the member
// that should run it), and per member the epoch of the membership term in
// which it last claimed (see the package documentation).
type assignment struct {
	shards int
	owner  []string
	target []string
	epoch  map[string]string
	// leaving are members handing their shards over before they release
	// their Lease: no shard is targeted to them meanwhile.
	leaving map[string]bool
}

func newAssignment(shards int) *assignment {
	return &assignment{shards: shards, owner: make([]string, shards), target: make([]string, shards), epoch: map[string]string{}, leaving: map[string]bool{}}
}

func (a *assignment) clone() *assignment {
	b := &assignment{shards: a.shards, owner: slices.Clone(a.owner), target: slices.Clone(a.target),
		epoch: make(map[string]string, len(a.epoch)), leaving: make(map[string]bool, len(a.leaving))}
	for k, v := range a.epoch {
		b.epoch[k] = v
	}
	for k := range a.leaving {
		b.leaving[k] = true
	}
	return b
}

// equal compares two assignments as they would be encoded: epochs of
// members no shard refers to are not kept.
func (a *assignment) equal(b *assignment) bool {
	if a.shards != b.shards || !slices.Equal(a.owner, b.owner) || !slices.Equal(a.target, b.target) {
		return false
	}
	for _, id := range a.referenced() {
		if a.epoch[id] != b.epoch[id] {
			return false
		}
	}
	return maps.Equal(a.leaving, b.leaving)
}

// referenced lists, sorted, the members some shard names as owner or
// target.
func (a *assignment) referenced() []string {
	seen := map[string]bool{}
	for i := 0; i < a.shards; i++ {
		seen[a.owner[i]] = true
		seen[a.target[i]] = true
	}
	delete(seen, "")
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// wire is the JSON form of an assignment: a member table and, per shard,
// an index into it (-1 for none). About 4 bytes per shard, so 1,024
// shards fit easily in an annotation.
type wire struct {
	Shards  int          `json:"shards"`
	Members []wireMember `json:"members"`
	Owner   []int        `json:"owner"`
	Target  []int        `json:"target"`
	Leaving []string     `json:"leaving,omitempty"`
}

type wireMember struct {
	ID    string `json:"id"`
	Epoch string `json:"epoch,omitempty"`
}

func (a *assignment) encode() string {
	ids := a.referenced()
	index := make(map[string]int, len(ids))
	w := wire{Shards: a.shards, Members: make([]wireMember, len(ids)), Owner: make([]int, a.shards), Target: make([]int, a.shards)}
	for i, id := range ids {
		index[id] = i
		w.Members[i] = wireMember{ID: id, Epoch: a.epoch[id]}
	}
	for i := 0; i < a.shards; i++ {
		w.Owner[i], w.Target[i] = -1, -1
		if o := a.owner[i]; o != "" {
			w.Owner[i] = index[o]
		}
		if t := a.target[i]; t != "" {
			w.Target[i] = index[t]
		}
	}
	for id := range a.leaving {
		w.Leaving = append(w.Leaving, id)
	}
	slices.Sort(w.Leaving)
	b, _ := json.Marshal(w)
	return string(b)
}

func decode(s string) (*assignment, error) {
	var w wire
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return nil, fmt.Errorf("annotation %s is not valid JSON: %w", AnnotationAssignment, err)
	}
	if w.Shards < 1 || w.Shards > MaxShards {
		return nil, fmt.Errorf("annotation %s: shards is %d, not in 1..%d", AnnotationAssignment, w.Shards, MaxShards)
	}
	if len(w.Owner) != w.Shards || len(w.Target) != w.Shards {
		return nil, fmt.Errorf("annotation %s: %d owners and %d targets for %d shards", AnnotationAssignment, len(w.Owner), len(w.Target), w.Shards)
	}
	a := newAssignment(w.Shards)
	for _, m := range w.Members {
		if m.ID == "" {
			return nil, fmt.Errorf("annotation %s: a member has an empty id", AnnotationAssignment)
		}
		a.epoch[m.ID] = m.Epoch
	}
	for _, id := range w.Leaving {
		a.leaving[id] = true
	}
	at := func(what string, i, k int) (string, error) {
		if k == -1 {
			return "", nil
		}
		if k < 0 || k >= len(w.Members) {
			return "", fmt.Errorf("annotation %s: %s of shard %d is member #%d of %d", AnnotationAssignment, what, i, k, len(w.Members))
		}
		return w.Members[k].ID, nil
	}
	var err error
	for i := 0; i < w.Shards; i++ {
		if a.owner[i], err = at("owner", i, w.Owner[i]); err != nil {
			return nil, err
		}
		if a.target[i], err = at("target", i, w.Target[i]); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// decodeLease reads the assignment of an assignment Lease; a Lease without
// the annotation holds an empty assignment of no known size (nil).
func decodeLease(l *coordinationv1.Lease) (*assignment, error) {
	s, ok := l.Annotations[AnnotationAssignment]
	if !ok {
		return nil, nil
	}
	return decode(s)
}

// Status is the assignment of a group as recorded in its assignment Lease,
// for tools (a kubectl plugin, a dashboard). It says what the members
// recorded, not whether they are alive: read their member Leases
// (MemberLeaseName) for that.
type Status struct {
	// Group is the group's name: the assignment Lease's name.
	Group string
	// Shards is K, the number of shards.
	Shards int
	// Members lists, sorted by identity, every member some shard names
	// as owner or target, and every leaving member.
	Members []MemberStatus
	// Unowned lists the shards no member owns: nobody runs them. Shards
	// in flight between two members are unowned between the old owner's
	// acknowledgement and the new owner's claim.
	Unowned []int
	// Moves lists the pending moves: shards whose owner is not their
	// target, in shard order.
	Moves []Move
}

// MemberStatus is one member's part of a Status.
type MemberStatus struct {
	Identity string
	// Owned are the shards this member owns: only it may run them.
	Owned []int
	// Targeted are the shards assigned to this member: it will run
	// them once it owns them.
	Targeted []int
	// Leaving is set while the member hands its shards over before it
	// leaves the group.
	Leaving bool
}

// Move is a pending move of one shard: From ("" if none) still owns it,
// To ("" if none) should run it.
type Move struct {
	Shard    int
	From, To string
}

// ReadStatus decodes the assignment Lease of a group (the Lease named
// after the group, labelled LabelGroup). It does not call the API server.
func ReadStatus(assignmentLease *coordinationv1.Lease) (Status, error) {
	if assignmentLease == nil {
		return Status{}, fmt.Errorf("shard.ReadStatus: nil Lease")
	}
	a, err := decodeLease(assignmentLease)
	if err != nil {
		return Status{}, fmt.Errorf("shard.ReadStatus: lease %s/%s: %w", assignmentLease.Namespace, assignmentLease.Name, err)
	}
	if a == nil {
		return Status{}, fmt.Errorf("shard.ReadStatus: lease %s/%s has no %s annotation: it is not a shard group's assignment Lease", assignmentLease.Namespace, assignmentLease.Name, AnnotationAssignment)
	}
	st := Status{Group: assignmentLease.Name, Shards: a.shards}
	byID := map[string]*MemberStatus{}
	ids := a.referenced()
	for id := range a.leaving {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		st.Members = append(st.Members, MemberStatus{Identity: id, Leaving: a.leaving[id]})
	}
	for i := range st.Members {
		byID[st.Members[i].Identity] = &st.Members[i]
	}
	for i := 0; i < a.shards; i++ {
		o, t := a.owner[i], a.target[i]
		if o == "" {
			st.Unowned = append(st.Unowned, i)
		} else {
			byID[o].Owned = append(byID[o].Owned, i)
		}
		if t != "" {
			byID[t].Targeted = append(byID[t].Targeted, i)
		}
		if o != t {
			st.Moves = append(st.Moves, Move{Shard: i, From: o, To: t})
		}
	}
	return st, nil
}

// MemberLeaseName returns the name of the Lease that holds the membership
// of identity in group: "<group>-<identity>" when that is a valid Lease
// name, else a valid name made from it plus a hash of the identity (an
// identity such as "host_1a2b" from leasehold.DefaultIdentity has an
// underscore, which Lease names may not have).
func MemberLeaseName(group, identity string) string {
	name := group + "-" + identity
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(identity))
	var b strings.Builder
	for _, r := range strings.ToLower(identity) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	clean := strings.Trim(b.String(), "-")
	suffix := fmt.Sprintf("%08x", h.Sum32())
	// Leave room for "<group>-" and "-<suffix>" within 253 characters.
	if room := validation.DNS1123SubdomainMaxLength - len(group) - 2 - len(suffix); len(clean) > room {
		clean = strings.TrimRight(clean[:max(room, 0)], "-")
	}
	if clean == "" {
		return group + "-" + suffix
	}
	return group + "-" + clean + "-" + suffix
}
