package monitoring

// File is one generated file of deploy/monitoring.
type File struct {
	Name string
	Data []byte
}

// The generated files' names in deploy/monitoring.
const (
	RulesFileName      = "leasehold-rules.yaml"
	PrometheusRuleName = "prometheusrule.yaml"
	DashboardFileName  = "dashboard.json"
)

// Files renders every generated file for p.
func Files(p Params) ([]File, error) {
	groups := Groups(p)
	rules, err := RulesFile(groups)
	if err != nil {
		return nil, err
	}
	pr, err := PrometheusRule("leasehold", groups)
	if err != nil {
		return nil, err
	}
	dash, err := DashboardJSON(p)
	if err != nil {
		return nil, err
	}
	return []File{{RulesFileName, rules}, {PrometheusRuleName, pr}, {DashboardFileName, dash}}, nil
}
