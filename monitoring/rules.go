// Package monitoring generates leasehold's Prometheus alert rules (a plain
// rules file and a PrometheusRule manifest) and its Grafana dashboard from
// one description, so that they cannot drift apart. The checked-in files
// under deploy/monitoring are its output (go run ./cmd/generate); the
// package's tests regenerate them and fail on any difference, parse every
// PromQL expression with Prometheus's own parser, and check every rule
// with Prometheus's rule-file loader. promtool's unit tests of each alert
// are deploy/monitoring/leasehold-rules.test.yaml.
//
// This module imports Prometheus; the leasehold modules users import do
// not.
package monitoring

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Params are the timings the rules are derived from. The defaults are
// leasehold's (DefaultParams); an operator whose elections use other
// timings, or whose Prometheus scrapes less often, generates rules of
// their own with Generate.
type Params struct {
	// LeaseDuration and RenewDeadline of the elections and shard groups
	// (leasehold.Config, shard.Config): 15s and 10s by default. The
	// safety margin is their difference.
	LeaseDuration, RenewDeadline time.Duration
	// ScrapeInterval is how often Prometheus scrapes the processes.
	// Targets are scraped at different offsets, so a handover can look
	// like two leaders, or like none, for up to one interval: every
	// "for" allows two.
	ScrapeInterval time.Duration
	// ShardSettle is how long a shard may stay unowned, or the group
	// unbalanced, before an alert: a crash leaves a member's shards
	// unowned for about LeaseDuration, and a shard's work may take its
	// time to return before it moves.
	ShardSettle time.Duration
	// Selector, if not empty, is added to every selector (for example
	// `job="my-controller"`), so that the rules see only leasehold's
	// processes when other components export leader_election_* too.
	Selector string
	// RunbookURL is the address of the runbook page (docs/alerts.md);
	// each alert links to its section.
	RunbookURL string
}

// DefaultParams are leasehold's default timings, a 30s scrape interval,
// and the runbook in this repository.
func DefaultParams() Params {
	return Params{
		LeaseDuration:  15 * time.Second,
		RenewDeadline:  10 * time.Second,
		ScrapeInterval: 30 * time.Second,
		ShardSettle:    5 * time.Minute,
		RunbookURL:     "https://github.com/leasehold/leasehold/blob/main/docs/alerts.md",
	}
}

// HeadroomThreshold is the renewal headroom, in seconds, at or below which
// LeaseholdRenewHeadroomLow counts a renewal: a quarter of the default
// RenewDeadline. It is a bucket bound of leasehold_renew_headroom_seconds.
const HeadroomThreshold = "2.5"

// Rule is one alerting rule, in the fields of a Prometheus rules file.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Group is a rule group.
type Group struct {
	Name  string `yaml:"name"`
	Rules []Rule `yaml:"rules"`
}

// dur formats d as Prometheus does (1m15s).
func dur(d time.Duration) string { return model.Duration(d).String() }

// sel returns the selector of metric, with extra matchers and p.Selector.
func (p Params) sel(metric string, matchers ...string) string {
	if p.Selector != "" {
		matchers = append(matchers, p.Selector)
	}
	if len(matchers) == 0 {
		return metric
	}
	return metric + "{" + strings.Join(matchers, ", ") + "}"
}

// Groups returns leasehold's alert rules for p.
func Groups(p Params) []Group {
	margin := p.LeaseDuration - p.RenewDeadline
	skew := 2 * p.ScrapeInterval
	status := p.sel("leader_election_master_status")
	rule := func(alert, severity, expr string, forDur time.Duration, summary, description string) Rule {
		r := Rule{
			Alert:  alert,
			Expr:   expr,
			Labels: map[string]string{"severity": severity},
			Annotations: map[string]string{
				"summary":     summary,
				"description": description,
				"runbook_url": p.RunbookURL + "#" + strings.ToLower(alert),
			},
		}
		if forDur > 0 {
			r.For = dur(forDur)
		}
		return r
	}
	elections := Group{Name: "leasehold-elections", Rules: []Rule{
		rule("LeaseholdNoLeader", "critical",
			fmt.Sprintf("(max by (name) (%s) == 0)\nor\n(group by (name) (max_over_time(%s[1h])) unless group by (name) (%s))", status, status, status),
			p.LeaseDuration+skew,
			"No process leads election {{ $labels.name }}.",
			fmt.Sprintf("No process has reported leading {{ $labels.name }} for longer than LeaseDuration (%s) plus two scrape intervals, or every candidate seen in the last hour is gone.", dur(p.LeaseDuration))),
		rule("LeaseholdSplitBrain", "critical",
			fmt.Sprintf("sum by (name) (%s) > 1", status),
			margin+skew,
			"More than one process reports leading election {{ $labels.name }}.",
			fmt.Sprintf("{{ $value }} processes have reported leading {{ $labels.name }} at once for longer than the safety margin (%s) plus two scrape intervals.", dur(margin))),
		rule("LeaseholdLeadershipFlapping", "warning",
			fmt.Sprintf("sum by (name) (increase(%s[30m])) > 4", p.sel("leader_election_transitions_total")),
			0,
			"Leadership of election {{ $labels.name }} keeps moving.",
			"{{ $value | printf \"%.0f\" }} terms of {{ $labels.name }} were won in the last 30 minutes."),
		rule("LeaseholdRenewFailing", "warning",
			fmt.Sprintf("sum by (name) (rate(%s[5m]))\n/\nsum by (name) (rate(%s[5m]))\n> 0.1",
				p.sel("leader_election_renew_failures_total"), p.sel("leader_election_renew_duration_seconds_count")),
			5*time.Minute,
			"Renewals of election {{ $labels.name }} fail.",
			"{{ $value | humanizePercentage }} of the renew requests of {{ $labels.name }} failed over the last 5 minutes."),
		rule("LeaseholdRenewHeadroomLow", "warning",
			fmt.Sprintf("sum by (name) (increase(%s[10m])) > 0", p.sel("leasehold_renew_headroom_seconds_bucket", `le="`+HeadroomThreshold+`"`)),
			0,
			"Renewals of election {{ $labels.name }} come close to the renew deadline.",
			"In the last 10 minutes, renewals of {{ $labels.name }} answered with "+HeadroomThreshold+"s or less of RenewDeadline left: the leader is at risk of losing its term to a slow API server."),
		rule("LeaseholdStepDownTimeout", "warning",
			fmt.Sprintf("sum by (name) (increase(%s[15m])) > 0", p.sel("leasehold_step_down_timeouts_total")),
			0,
			"A step-down of election {{ $labels.name }} timed out.",
			"The work of a term of {{ $labels.name }} did not return within StepDownTimeout of its cancellation."),
		rule("LeaseholdWorkOutlivedTerm", "critical",
			fmt.Sprintf("sum by (name) (increase(%s[15m])) > 0", p.sel("leasehold_work_outlived_total")),
			0,
			"Work of election {{ $labels.name }} outlived its term.",
			"The work of a lost term of {{ $labels.name }} did not return within the safety margin: another leader may have run at the same time."),
	}}
	shards := p.sel("leasehold_shards")
	owned := p.sel("leasehold_shards_owned")
	groups := Group{Name: "leasehold-shards", Rules: []Rule{
		rule("LeaseholdShardsUnowned", "critical",
			fmt.Sprintf("max by (group) (%s) - sum by (group) (%s) > 0", shards, owned),
			p.ShardSettle,
			"Shards of group {{ $labels.group }} run nowhere.",
			fmt.Sprintf("{{ $value }} shards of {{ $labels.group }} have run in no member for %s.", dur(p.ShardSettle))),
		rule("LeaseholdShardOwnedTwice", "critical",
			fmt.Sprintf("sum by (group) (%s) > max by (group) (%s)", owned, shards),
			margin+skew,
			"More shards of group {{ $labels.group }} run than it has.",
			fmt.Sprintf("The members of {{ $labels.group }} report more running shards than the group has, for longer than the safety margin (%s) plus two scrape intervals: a shard runs twice.", dur(margin))),
		rule("LeaseholdShardsUnbalanced", "warning",
			fmt.Sprintf("max by (group) (%s) - min by (group) (%s) > 1", owned, owned),
			p.ShardSettle,
			"Shards of group {{ $labels.group }} are unbalanced.",
			fmt.Sprintf("The members of {{ $labels.group }} run numbers of shards that differ by {{ $value }}, more than one, for %s.", dur(p.ShardSettle))),
	}}
	return []Group{elections, groups}
}

// header starts every generated file.
const header = "# Generated by monitoring/cmd/generate from monitoring/rules.go; do not edit.\n# Runbook: docs/alerts.md. Tests: leasehold-rules.test.yaml (promtool test rules).\n"

// RulesFile renders the groups as a Prometheus rules file.
func RulesFile(groups []Group) ([]byte, error) {
	return render(map[string]any{"groups": groups})
}

// PrometheusRule renders the groups as a prometheus-operator PrometheusRule
// manifest named name.
func PrometheusRule(name string, groups []Group) ([]byte, error) {
	type meta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	type spec struct {
		Groups []Group `yaml:"groups"`
	}
	return render(struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   meta   `yaml:"metadata"`
		Spec       spec   `yaml:"spec"`
	}{"monitoring.coreos.com/v1", "PrometheusRule", meta{name, map[string]string{"app.kubernetes.io/name": "leasehold"}}, spec{groups}})
}

func render(v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
