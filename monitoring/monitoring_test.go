package monitoring_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
	"github.com/leasehold/leasehold/monitoring"
)

const deployDir = "../deploy/monitoring"

var promql = parser.NewParser(parser.Options{})

// The checked-in files are what the generator writes: regenerate with
// `make monitoring` (go run ./cmd/generate in this module).
func TestGeneratedFilesAreUpToDate(t *testing.T) {
	files, err := monitoring.Files(monitoring.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(deployDir, f.Name))
		if err != nil {
			t.Errorf("%v: run `make monitoring` to generate it", err)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("deploy/monitoring/%s differs from what monitoring generates (first difference at line %d): run `make monitoring` and commit the result",
				f.Name, firstDiffLine(got, f.Data))
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// loadRules reads the checked-in rules file with Prometheus's own loader,
// which parses and validates every rule (expressions, durations, label
// and annotation templates).
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	rgs, errs := rulefmt.ParseFile(filepath.Join(deployDir, monitoring.RulesFileName), false, model.UTF8Validation, promql, slog.Default())
	for _, err := range errs {
		t.Error(err)
	}
	if rgs == nil {
		t.FailNow()
	}
	return rgs
}

// Both rule files load in Prometheus, and the PrometheusRule's spec holds
// the very groups of the plain file.
func TestRuleFilesLoad(t *testing.T) {
	rgs := loadRules(t)
	pr, err := os.ReadFile(filepath.Join(deployDir, monitoring.PrometheusRuleName))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		APIVersion string    `yaml:"apiVersion"`
		Kind       string    `yaml:"kind"`
		Spec       yaml.Node `yaml:"spec"`
	}
	if err := yaml.Unmarshal(pr, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.APIVersion != "monitoring.coreos.com/v1" || manifest.Kind != "PrometheusRule" {
		t.Errorf("%s is a %s %s, want a monitoring.coreos.com/v1 PrometheusRule", monitoring.PrometheusRuleName, manifest.APIVersion, manifest.Kind)
	}
	spec, err := yaml.Marshal(&manifest.Spec)
	if err != nil {
		t.Fatal(err)
	}
	prg, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promql, slog.Default())
	for _, err := range errs {
		t.Errorf("PrometheusRule spec: %v", err)
	}
	a, _ := yaml.Marshal(rgs)
	b, _ := yaml.Marshal(prg)
	if !bytes.Equal(a, b) {
		t.Errorf("the PrometheusRule's groups differ from the rules file's:\n%s\nvs\n%s", b, a)
	}
}

// alerts lists the alert names of the checked-in rules.
func alerts(t *testing.T) []string {
	var out []string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, r.Alert)
		}
	}
	return out
}

// The alerts the issue asks for are there, each with a runbook section in
// docs/alerts.md.
func TestEveryAlertHasARunbook(t *testing.T) {
	want := []string{"LeaseholdNoLeader", "LeaseholdSplitBrain", "LeaseholdLeadershipFlapping", "LeaseholdRenewFailing",
		"LeaseholdRenewHeadroomLow", "LeaseholdStepDownTimeout", "LeaseholdWorkOutlivedTerm",
		"LeaseholdShardsUnowned", "LeaseholdShardOwnedTwice", "LeaseholdShardsUnbalanced"}
	got := alerts(t)
	if !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
	doc, err := os.ReadFile("../docs/alerts.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got {
		if !bytes.Contains(doc, []byte("\n## "+a+"\n")) {
			t.Errorf("docs/alerts.md has no section \"## %s\" (its runbook_url anchor)", a)
		}
	}
}

// promtool's unit tests (leasehold-rules.test.yaml, run by make rules)
// test every alert both firing and not firing.
func TestRuleTestsFireAndHoldEveryAlert(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "leasehold-rules.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{monitoring.RulesFileName}) {
		t.Errorf("rule_files %v, want [%s]", tests.RuleFiles, monitoring.RulesFileName)
	}
	fires, holds := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				holds[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts(t) {
		if !fires[a] {
			t.Errorf("no promtool test expects %s to fire", a)
		}
		if !holds[a] {
			t.Errorf("no promtool test expects %s not to fire", a)
		}
	}
}

// dashboardExprs returns every PromQL expression of the checked-in
// dashboard: its queries' expr, and the selector inside each variable's
// label_values(...). Grafana's variables are given values first.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, monitoring.DashboardFileName))
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	grafana := strings.NewReplacer("$__rate_interval", "1m", `"$name"`, `".*"`, `"$group"`, `".*"`)
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(x, k)
			}
		case []any:
			for _, x := range v {
				walk(x, key)
			}
		case string:
			switch {
			case key == "expr":
				out = append(out, grafana.Replace(v))
			case key == "query" && labelValues.MatchString(v):
				out = append(out, labelValues.FindStringSubmatch(v)[1])
			}
		}
	}
	walk(d, "")
	return out
}

// exprs is every PromQL expression of the rules and the dashboard.
func exprs(t *testing.T) []string {
	var out []string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return append(out, dashboardExprs(t)...)
}

// Every PromQL expression of the rules and the dashboard parses with
// Prometheus's parser, and names only metrics that metrics/prometheus
// exports (a typo would otherwise make an alert that never fires).
func TestEveryExpressionParsesAndNamesExportedMetrics(t *testing.T) {
	exported := exportedNames(t)
	all := exprs(t)
	if n := len(dashboardExprs(t)); n < 15 {
		t.Errorf("only %d expressions found in the dashboard", n)
	}
	for _, e := range all {
		expr, err := promql.ParseExpr(e)
		if err != nil {
			t.Errorf("%s:\n%v", e, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && !exported[vs.Name] {
				t.Errorf("%s names %s, which metrics/prometheus does not export", e, vs.Name)
			}
			return nil
		})
	}
}

// exportedNames lists every series name metrics/prometheus exports, with
// PerShard, once an election and a shard group exist.
func exportedNames(t *testing.T) map[string]bool {
	reg := promclient.NewRegistry()
	m, err := leaseholdprom.New(reg, leaseholdprom.PerShard())
	if err != nil {
		t.Fatal(err)
	}
	m.LeaderChanged("ns/e", false)
	m.Candidacy("ns/e", "candidate")
	m.ShardGroup("ns/g", 2)
	m.ShardOwned("ns/g", 0, true)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				out[f.GetName()+s] = true
			}
		}
	}
	return out
}

// LeaseholdRenewHeadroomLow selects the bucket le="2.5": metrics/prometheus
// has that bucket, and a renewal at the threshold falls into it.
func TestHeadroomThresholdIsABucket(t *testing.T) {
	reg := promclient.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.RenewHeadroom("ns/e", 2500*time.Millisecond)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "leasehold_renew_headroom_seconds" {
			continue
		}
		for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
			if strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64) == monitoring.HeadroomThreshold {
				if b.GetCumulativeCount() != 1 {
					t.Errorf("a renewal with %ss of headroom is not in the bucket le=%q", monitoring.HeadroomThreshold, monitoring.HeadroomThreshold)
				}
				return
			}
		}
	}
	t.Errorf("leasehold_renew_headroom_seconds has no bucket le=%q", monitoring.HeadroomThreshold)
}

// Params move every derived "for": LeaseDuration plus two scrape
// intervals for no leader; the safety margin plus two scrape intervals
// for two leaders; and a Selector narrows every selector.
func TestParams(t *testing.T) {
	p := monitoring.DefaultParams()
	p.LeaseDuration, p.RenewDeadline, p.ScrapeInterval, p.Selector = 4*time.Second, 3*time.Second, time.Second, `job="demo"`
	fors := map[string]string{}
	for _, g := range monitoring.Groups(p) {
		for _, r := range g.Rules {
			fors[r.Alert] = r.For
			if _, err := promql.ParseExpr(r.Expr); err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			if !strings.Contains(r.Expr, `job="demo"`) {
				t.Errorf("%s does not use the selector: %s", r.Alert, r.Expr)
			}
		}
	}
	if fors["LeaseholdNoLeader"] != "6s" || fors["LeaseholdSplitBrain"] != "3s" {
		t.Errorf("for: no leader %s, split brain %s; want 6s and 3s", fors["LeaseholdNoLeader"], fors["LeaseholdSplitBrain"])
	}
	if _, err := monitoring.DashboardJSON(p); err != nil {
		t.Error(err)
	}
}
