package plugin

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testOptions returns Options that use client and namespace ns, with the
// clock now (time.Now if nil).
func testOptions(client kubernetes.Interface, ns string, now func() time.Time) (*Options, *syncBuffer, *syncBuffer) {
	out, errOut := &syncBuffer{}, &syncBuffer{}
	if now == nil {
		now = time.Now
	}
	o := &Options{
		ConfigFlags: genericclioptions.NewConfigFlags(false),
		IOStreams:   genericiooptions.IOStreams{Out: out, ErrOut: errOut},
		newClient:   func() (kubernetes.Interface, error) { return client, nil },
		namespace:   func() (string, error) { return ns, nil },
		now:         now,
	}
	return o, out, errOut
}

// execute runs the plugin's command line args with o.
func execute(ctx context.Context, o *Options, args ...string) error {
	cmd := newRootCommand(o)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

// newLease returns a Lease held by holder (none if empty), renewed at renew.
func newLease(ns, name, holder string, seconds int32, renew time.Time, transitions int32) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: coordinationv1.LeaseSpec{
			LeaseDurationSeconds: ptr.To(seconds),
			AcquireTime:          &metav1.MicroTime{Time: renew.Add(-5 * time.Minute)},
			RenewTime:            &metav1.MicroTime{Time: renew},
			LeaseTransitions:     ptr.To(transitions),
		},
	}
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	}
	return l
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func mustLease(t *testing.T, client kubernetes.Interface, ns, name string) *coordinationv1.Lease {
	t.Helper()
	l, err := client.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease %s/%s: %v", ns, name, err)
	}
	return l
}
