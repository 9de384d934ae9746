package prometheus

// The shard group's series: the implementation of shard.Metrics.

import (
	"strconv"
	"time"

	"github.com/leasehold/leasehold/shard"
)

// initGroup creates every series of the shard group, at zero, the first
// time group is seen.
func (m *Metrics) initGroup(group string) {
	if _, loaded := m.groups.LoadOrStore(group, struct{}{}); loaded {
		return
	}
	m.shards.WithLabelValues(group)
	m.shardsOwned.WithLabelValues(group)
	for _, c := range shard.MoveCauses() {
		m.shardMoves.WithLabelValues(group, string(c))
		m.handover.WithLabelValues(group, string(c))
	}
	m.members.WithLabelValues(group)
}

// ShardGroup implements shard.Metrics: shard.New calls it, which creates
// the group's series.
func (m *Metrics) ShardGroup(group string, shards int) {
	m.initGroup(group)
	m.shards.WithLabelValues(group).Set(float64(shards))
}

// ShardOwned implements shard.Metrics.
func (m *Metrics) ShardOwned(group string, i int, owned bool) {
	m.initGroup(group)
	g := m.shardsOwned.WithLabelValues(group)
	v := 0.0
	if owned {
		v = 1
		g.Inc()
	} else {
		g.Dec()
	}
	if m.shardOwned != nil {
		m.shardOwned.WithLabelValues(group, strconv.Itoa(i)).Set(v)
	}
}

// ShardMoved implements shard.Metrics.
func (m *Metrics) ShardMoved(group string, _ int, cause shard.MoveCause, handover time.Duration) {
	m.initGroup(group)
	m.shardMoves.WithLabelValues(group, string(cause)).Inc()
	m.handover.WithLabelValues(group, string(cause)).Observe(handover.Seconds())
}

// ShardMembers implements shard.Metrics.
func (m *Metrics) ShardMembers(group string, members int) {
	m.initGroup(group)
	m.members.WithLabelValues(group).Set(float64(members))
}
