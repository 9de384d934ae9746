package plugin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/leasehold/leasehold/shard"
)

// shardFleet is a group "web" of 4 shards in namespace apps, as its
// members record it: m1 owns 0-1 (target 0), m2 owns 2 (targets 1-3) but
// its membership expired, m3 is leaving and has no Lease; shard 3 is
// unowned.
func shardFleet() *fake.Clientset {
	group := map[string]string{ShardGroupLabel: "web"}
	assignment := newLease("apps", "web", "", 15, t0.Add(-3*time.Second), 0)
	assignment.Spec.HolderIdentity = nil
	assignment.Labels = group
	assignment.Annotations = map[string]string{shard.AnnotationAssignment: `{"shards":4,"members":[{"id":"m1","epoch":"10"},{"id":"m2","epoch":"11"}],` +
		`"owner":[0,0,1,-1],"target":[0,1,1,1],"leaving":["m3"]}`}
	m1 := newLease("apps", shard.MemberLeaseName("web", "m1"), "m1", 15, t0.Add(-time.Second), 0)
	m1.Labels = group
	m2 := newLease("apps", shard.MemberLeaseName("web", "m2"), "m2", 15, t0.Add(-20*time.Second), 0)
	m2.Labels = group
	return fake.NewClientset(assignment, m1, m2, newLease("apps", "ctrl", "a", 15, t0.Add(-time.Second), 0))
}

func TestStatusShardGroup(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{{
		args: []string{"status"},
		want: `
NAME     HOLDER   DURATION   RENEWED             TRANSITIONS   PREFERRED   GROUP
ctrl     a        15s        1.0s ago            0             <none>      <none>
web      <none>   15s        3.0s ago            0             <none>      web
web-m1   m1       15s        1.0s ago            0             <none>      web
web-m2   m2       15s        20s ago (expired)   0             <none>      web

GROUP   SHARDS   MEMBER      OWNED   TARGETED   MEMBERSHIP
web     4        m1          2       1          renewed 1.0s ago
web     4        m2          1       3          renewed 20s ago (expired)
web     4        m3          0       0          missing, leaving
web     4        <unowned>   1       -          -
`,
	}, {
		// One Lease named: the members' Leases are listed to show their state.
		args: []string{"status", "web", "-o", "wide"},
		want: `
NAME   HOLDER   DURATION   RENEWED    TRANSITIONS   PREFERRED   GROUP   ACQUIRED   RENEW TIME                 STRATEGY
web    <none>   15s        3.0s ago   0             <none>      web     5m3s ago   2026-11-25T09:59:57.000Z   <none>

GROUP   SHARDS   MEMBER      OWNED   TARGETED   MEMBERSHIP                  OWNED SHARDS   MEMBER LEASE
web     4        m1          2       1          renewed 1.0s ago            0-1            web-m1
web     4        m2          1       3          renewed 20s ago (expired)   2              web-m2
web     4        m3          0       0          missing, leaving            <none>         web-m3
web     4        <unowned>   1       -          -                           3              -
`,
	}} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o, out, _ := testOptions(shardFleet(), "apps", fixedClock(t0))
			if err := execute(context.Background(), o, tc.args...); err != nil {
				t.Fatal(err)
			}
			if got, want := out.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("%v printed:\n%s\nwant:\n%s", tc.args, got, want)
			}
		})
	}
}

func TestStatusShardGroupJSON(t *testing.T) {
	o, out, _ := testOptions(shardFleet(), "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status", "web", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var s LeaseStatus
	if err := json.Unmarshal([]byte(out.String()), &s); err != nil {
		t.Fatal(err)
	}
	g := s.ShardAssignment
	if g == nil || g.Shards != 4 || len(g.Members) != 3 || g.PendingMoves != 2 || len(g.Unowned) != 1 || g.Unowned[0] != 3 {
		t.Fatalf("shardAssignment = %+v\n%s", g, out)
	}
	m1, m2, m3 := g.Members[0], g.Members[1], g.Members[2]
	if m1.Identity != "m1" || len(m1.Owned) != 2 || m1.Membership != "held" || m1.SinceRenewal.Duration != time.Second || m1.MemberLease != "web-m1" {
		t.Errorf("m1 = %+v", m1)
	}
	if m2.Membership != "expired" || len(m2.Targeted) != 3 {
		t.Errorf("m2 = %+v", m2)
	}
	if m3.Membership != "missing" || !m3.Leaving || m3.Owned == nil {
		t.Errorf("m3 = %+v (owned must be [] in JSON, not null)", m3)
	}
}

func TestStatusShardGroupMembersUnreadable(t *testing.T) {
	client := shardFleet()
	forbid(client, "list") // status web may get it, not list the members
	o, out, _ := testOptions(client, "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status", "web"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "web     4        m1          2       1          unknown\n") {
		t.Errorf("members' membership should be unknown:\n%s", out)
	}
}

func TestStatusShardGroupBadAssignment(t *testing.T) {
	l := newLease("apps", "web", "", 15, t0, 0)
	l.Annotations = map[string]string{shard.AnnotationAssignment: "{"}
	o, out, _ := testOptions(fake.NewClientset(l), "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\nweb     ?        <unreadable: shard.ReadStatus: lease apps/web: annotation leasehold.dev/shard-assignment is not valid JSON") {
		t.Errorf("printed:\n%s", out)
	}
}

func TestShardRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{{nil, ""}, {[]int{3}, "3"}, {[]int{0, 1, 2, 5, 7, 8}, "0-2,5,7-8"}, {[]int{1, 3}, "1,3"}} {
		if got := shardRanges(tc.in); got != tc.want {
			t.Errorf("shardRanges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestShardMembershipStates(t *testing.T) {
	assignment := newLease("apps", "web", "", 15, t0, 0)
	assignment.Annotations = map[string]string{shard.AnnotationAssignment: `{"shards":1,"members":[{"id":"m1"}],"owner":[0],"target":[0]}`}
	for _, tc := range []struct {
		name   string
		member *coordinationv1.Lease // web-m1, or none
		byName bool                  // whether the namespace could be read
		want   string
	}{
		{"held", newLease("apps", "web-m1", "m1", 15, t0.Add(-time.Second), 0), true, "held"},
		{"expired", newLease("apps", "web-m1", "m1", 15, t0.Add(-16*time.Second), 0), true, "expired"},
		{"released", newLease("apps", "web-m1", "", 15, t0.Add(-time.Second), 0), true, "not held"},
		{"held by another", newLease("apps", "web-m1", "m9", 15, t0.Add(-time.Second), 0), true, "not held"},
		{"missing", nil, true, "missing"},
		{"unreadable", nil, false, "unknown"},
	} {
		var byName map[string]*coordinationv1.Lease
		if tc.byName {
			byName = map[string]*coordinationv1.Lease{}
			if tc.member != nil {
				byName["apps/web-m1"] = tc.member
			}
		}
		g, err := shardGroupOf(assignment, byName, t0)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Members[0].Membership; got != tc.want {
			t.Errorf("%s: membership %q, want %q", tc.name, got, tc.want)
		}
	}
}
