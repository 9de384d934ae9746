package shard

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

func validConfig() Config {
	return Config{
		Namespace: "ns", Group: "grp", Identity: "a", Client: leaseholdtest.NewServer().Client("a"),
		Shards: 8, OnShardStarted: func(context.Context, int) {},
	}
}

func TestConfigErrorsNameFieldValueAndFix(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"empty", func(c *Config) { *c = Config{} }, []string{
			`Namespace is ""`, `Group is ""`, `Identity is ""`, "Client is nil", "Shards is 0", "OnShardStarted is nil",
		}},
		{"too many shards", func(c *Config) { c.Shards = 1025 }, []string{"Shards is 1025", "1..1024"}},
		{"bad group", func(c *Config) { c.Group = "My_Group" }, []string{`Group is "My_Group"`, "lowercase DNS name"}},
		{"long group", func(c *Config) { c.Group = strings.Repeat("g", 64) }, []string{"at most 63"}},
		// The election's own timing rules and messages.
		{"no margin", func(c *Config) {
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 11*time.Second, 10*time.Second, 2*time.Second
		},
			[]string{"LeaseDuration is 11s", "safety margin"}},
		{"fractional", func(c *Config) { c.LeaseDuration = 15500 * time.Millisecond }, []string{"whole seconds"}},
		{"negative", func(c *Config) { c.RetryPeriod = -time.Second }, []string{"RetryPeriod is -1s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.mutate(&cfg)
			m, err := New(cfg)
			if m != nil || !errors.Is(err, leasehold.ErrInvalidConfig) {
				t.Fatalf("New = %v, %v; want nil and ErrInvalidConfig", m, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := New(validConfig()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestMemberLeaseNameIsAlwaysValid(t *testing.T) {
	for _, id := range []string{"pod-1", "host_0a1b2c3d4e", "UPPER", "a/b", "___", strings.Repeat("x", 300)} {
		name := MemberLeaseName("grp", id)
		if !strings.HasPrefix(name, "grp-") || len(validation.IsDNS1123Subdomain(name)) > 0 {
			t.Errorf("MemberLeaseName(%q) = %q: %v", id, name, validation.IsDNS1123Subdomain(name))
		}
		if cfg := validConfig(); true {
			cfg.Identity = id
			if _, err := New(cfg); err != nil {
				t.Errorf("identity %q refused: %v", id, err)
			}
		}
	}
	if MemberLeaseName("grp", "pod-1") != "grp-pod-1" {
		t.Errorf("a valid identity is not used as is: %s", MemberLeaseName("grp", "pod-1"))
	}
	if MemberLeaseName("grp", "a_b") == MemberLeaseName("grp", "a-b") {
		t.Error("two identities share a member Lease name")
	}
}
