package shard

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// client-go's plain fake clientset returns objects without a
// resourceVersion, so no write can be compare-and-swap. A member refuses
// it before writing the assignment, with an error that says so and what
// to use instead.
func TestPlainFakeClientsetIsRefusedClearly(t *testing.T) {
	synctest.Test(t, testPlainFakeClientsetIsRefusedClearly)
}

func testPlainFakeClientsetIsRefusedClearly(t *testing.T) {
	cs := fake.NewClientset()
	m, err := New(Config{
		Namespace: "ns", Group: "grp", Identity: "a", Client: cs.CoordinationV1(), Shards: 4,
		OnShardStarted: func(context.Context, int) { t.Error("a shard started without compare-and-swap") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Run(ctx)
	if !errors.Is(err, ErrNoCompareAndSwap) {
		t.Fatalf("Run = %v, want ErrNoCompareAndSwap", err)
	}
	for _, w := range []string{"resourceVersion", "fake clientset", "leaseholdtest"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	// Its own member Lease may have been written (that is how the missing
	// resourceVersion shows with an empty namespace); the assignment,
	// which records owners, never is.
	if _, err := cs.CoordinationV1().Leases("ns").Get(ctx, "grp", metav1.GetOptions{}); err == nil {
		t.Error("wrote the assignment Lease through a client without compare-and-swap")
	}
}
