package shard

import (
	"fmt"
	"math/bits"
	"strconv"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/sharding"
)

// The object fields a shard can be computed from: the ones KEP-5866's
// shardRange() accepts.
const (
	// FieldUID spreads objects by metadata.uid: even spread, but an
	// object's shard is known only once it has been created.
	FieldUID = "object.metadata.uid"
	// FieldNamespace keeps each namespace in one shard.
	FieldNamespace = "object.metadata.namespace"
)

// MaxShards is the largest number of shards a group may have.
const MaxShards = 1024

// hashSpaceEnd is 2^64 written as KEP-5866 writes the exclusive upper
// bound of the hash space.
const hashSpaceEnd = "0x10000000000000000"

// Of returns the shard of obj among shards: shard i is the i-th of shards
// equal ranges of the 64-bit FNV-1a hash of field (FieldUID or
// FieldNamespace), hashed exactly as KEP-5866's server-side filter hashes
// it, so Of(obj) == i exactly when Selector(field, shards, i) matches obj.
// It fails for an unsupported field, a shard count outside 1..MaxShards,
// an object without metadata, and an object without a UID when field is
// FieldUID (it has not been created yet: the server assigns the UID).
func Of(obj runtime.Object, field string, shards int) (int, error) {
	if err := checkField(field); err != nil {
		return 0, err
	}
	if shards < 1 || shards > MaxShards {
		return 0, fmt.Errorf("shard.Of: shards is %d: it must be between 1 and %d", shards, MaxShards)
	}
	value, err := sharding.ResolveFieldValue(obj, field)
	if err != nil {
		return 0, fmt.Errorf("shard.Of: %w", err)
	}
	if field == FieldUID && value == "" {
		name := ""
		if m, err := meta.Accessor(obj); err == nil {
			name = m.GetNamespace() + "/" + m.GetName()
		}
		return 0, fmt.Errorf("shard.Of: object %s has no metadata.uid yet (the API server assigns it on create): compute its shard from the created object", name)
	}
	return shardOfHash(hashOf(value), shards), nil
}

// hashOf is the 64-bit FNV-1a hash of value, through the same function the
// API server uses, so the two can never disagree on the bytes hashed.
func hashOf(value string) uint64 {
	h, err := strconv.ParseUint(sharding.HashField(value), 16, 64)
	if err != nil {
		// HashField always returns 16 hex digits.
		panic(fmt.Sprintf("shard: unexpected hash %q: %v", sharding.HashField(value), err))
	}
	return h
}

// shardOfHash maps a hash to its shard: floor(h * shards / 2^64), the high
// word of the 128-bit product. With rangeStart(i) = ceil(i * 2^64 /
// shards), h >= rangeStart(i) exactly when h*shards >= i*2^64, so this is
// the i with rangeStart(i) <= h < rangeStart(i+1).
func shardOfHash(h uint64, shards int) int {
	hi, _ := bits.Mul64(h, uint64(shards))
	return int(hi)
}

// rangeStart returns ceil(i * 2^64 / shards) as KEP-5866 writes a bound:
// "0x" and 16 lowercase hex digits, or "0x10000000000000000" for i ==
// shards.
func rangeStart(i, shards int) string {
	if i >= shards {
		return hashSpaceEnd
	}
	q, r := bits.Div64(uint64(i), 0, uint64(shards))
	if r != 0 {
		q++
	}
	return fmt.Sprintf("0x%016x", q)
}

// Selector returns the KEP-5866 shard selector that matches the objects of
// the owned shards among shards, by field (FieldUID or FieldNamespace).
// Adjacent shards are merged into one shardRange, so the selector of a
// member's whole share stays short. Its String() is the value for
// metav1.ListOptions.ShardSelector; its Matches filters on the client
// where the API server lacks the ShardedListAndWatch feature gate (see
// ServerFiltersShards).
//
// With no owned shard the selector matches nothing, and its String() is
// an empty range that the API server rejects, so it cannot be mistaken
// for "no selector" (which would list everything): do not list at all.
//
// Selector panics on an unsupported field, a shard count outside
// 1..MaxShards, or an owned shard outside 0..shards-1: these are
// programming errors, like a bad regexp in regexp.MustCompile.
func Selector(field string, shards int, owned ...int) sharding.Selector {
	if err := checkField(field); err != nil {
		panic(err.Error())
	}
	if shards < 1 || shards > MaxShards {
		panic(fmt.Sprintf("shard.Selector: shards is %d: it must be between 1 and %d", shards, MaxShards))
	}
	in := make([]bool, shards)
	for _, i := range owned {
		if i < 0 || i >= shards {
			panic(fmt.Sprintf("shard.Selector: shard %d is outside 0..%d", i, shards-1))
		}
		in[i] = true
	}
	var reqs []sharding.ShardRangeRequirement
	for i := 0; i < shards; {
		if !in[i] {
			i++
			continue
		}
		j := i
		for j < shards && in[j] {
			j++
		}
		reqs = append(reqs, sharding.ShardRangeRequirement{Key: field, Start: rangeStart(i, shards), End: rangeStart(j, shards)})
		i = j
	}
	if len(reqs) == 0 {
		return nothing{field: field}
	}
	return sharding.NewSelector(reqs...)
}

func checkField(field string) error {
	switch field {
	case FieldUID, FieldNamespace:
		return nil
	}
	return fmt.Errorf("shard: field %q is not supported: use shard.FieldUID (%q) or shard.FieldNamespace (%q), the fields KEP-5866 can hash", field, FieldUID, FieldNamespace)
}

// nothing is the selector of no shard. apimachinery's empty selector means
// everything, so it has its own type.
type nothing struct{ field string }

func (nothing) Matches(runtime.Object) (bool, error) { return false, nil }
func (nothing) Empty() bool                          { return false }

// String is an empty range, which the API server refuses (start must be
// below end): a request with it fails instead of listing everything.
func (n nothing) String() string {
	return fmt.Sprintf("shardRange(%s, '0x0000000000000000', '0x0000000000000000')", n.field)
}
func (nothing) Requirements() []sharding.ShardRangeRequirement { return nil }
func (n nothing) DeepCopySelector() sharding.Selector          { return n }
