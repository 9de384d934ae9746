package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var libColors = map[Lib]color.Color{
	Leasehold: color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	ClientGo:  color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
}

// minPlotMs is where non-positive latencies are drawn on a log axis.
const minPlotMs = 0.1

// ecdf turns samples (ms) into the points of an empirical CDF.
func ecdf(ms []float64) plotter.XYs {
	s := slices.Clone(ms)
	slices.Sort(s)
	xys := make(plotter.XYs, len(s))
	for i, v := range s {
		xys[i].X = max(v, minPlotMs)
		xys[i].Y = float64(i+1) / float64(len(s))
	}
	return xys
}

func toMs(d []time.Duration, offset time.Duration) []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v-offset) / 1e6
	}
	return out
}

// mark is a labelled vertical reference line (a target, a limit).
type mark struct {
	label string
	x     float64 // ms
	style int     // markLimit, markP50 or markMax
}

const (
	markLimit = iota
	markP50
	markMax
)

var markStyles = []struct {
	dashes []vg.Length
	color  color.Color
}{
	{[]vg.Length{vg.Points(6), vg.Points(3)}, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}},
	{[]vg.Length{vg.Points(2), vg.Points(2)}, color.Gray{Y: 0x30}},
	{[]vg.Length{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}, color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}},
}

// decadeTicks labels the powers of ten from lo to hi, with unlabelled
// minor ticks at 2..9 times each.
func decadeTicks(lo, hi float64) plot.ConstantTicks {
	var ticks []plot.Tick
	for d := lo; d <= hi*1.0001; d *= 10 {
		ticks = append(ticks, plot.Tick{Value: d, Label: strconv.FormatFloat(d, 'f', -1, 64)})
		for k := 2.0; k < 10 && d*k < hi; k++ {
			ticks = append(ticks, plot.Tick{Value: d * k})
		}
	}
	return ticks
}

// cdfPlot draws one ECDF per library on a log x axis, with vertical
// reference lines.
func cdfPlot(title, xlabel string, series map[Lib][]float64, marks []mark, path string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "fraction of rounds ≤ x"
	p.X.Scale = plot.LogScale{}
	// Room above the curves for the legend.
	p.Y.Min, p.Y.Max = 0, 1.45
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0"}, {Value: 0.25}, {Value: 0.5, Label: "0.5"}, {Value: 0.75}, {Value: 1, Label: "1"}})
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	p.Add(plotter.NewGrid())
	xmin, xmax := 1e18, 0.0
	for _, lib := range Libs {
		ms := series[lib]
		if len(ms) == 0 {
			continue
		}
		pts := ecdf(ms)
		line, scatter, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		line.StepStyle = plotter.PostStep
		line.Color = libColors[lib]
		line.Width = vg.Points(1.5)
		scatter.Color = libColors[lib]
		scatter.Shape = draw.CircleGlyph{}
		scatter.Radius = vg.Points(2.5)
		p.Add(line, scatter)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", lib, len(ms)), line, scatter)
		xmin, xmax = min(xmin, pts[0].X), max(xmax, pts[len(pts)-1].X)
	}
	for _, m := range marks {
		l, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: 0}, {X: m.x, Y: 1}})
		if err != nil {
			return err
		}
		st := markStyles[m.style]
		l.Dashes, l.Color, l.Width = st.dashes, st.color, vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(m.label, l)
		xmin, xmax = min(xmin, m.x), max(xmax, m.x)
	}
	if xmax > 0 {
		// Whole decades, so that the log axis has labelled ticks.
		p.X.Min = math.Pow(10, math.Floor(math.Log10(xmin)))
		p.X.Max = math.Pow(10, math.Ceil(math.Log10(xmax)))
		p.X.Tick.Marker = decadeTicks(p.X.Min, p.X.Max)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

// steadyPlot draws requests/min against N for both libraries.
func steadyPlot(r *Report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Steady state: requests/min on one Lease (%s)", r.Opts.SteadyTimings)
	p.X.Label.Text = "candidates N"
	p.Y.Label.Text = "requests/min (all verbs)"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for _, lib := range Libs {
		var xys plotter.XYs
		for _, s := range r.Steady {
			if s.Lib == lib {
				xys = append(xys, plotter.XY{X: float64(s.N), Y: s.PerMin()})
			}
		}
		if len(xys) == 0 {
			continue
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		line, scatter, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		line.Color, scatter.Color = libColors[lib], libColors[lib]
		line.Width = vg.Points(1.5)
		scatter.Shape = draw.CircleGlyph{}
		p.Add(line, scatter)
		p.Legend.Add(lib.String(), line, scatter)
	}
	p.Y.Min = 0
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

// WritePlots writes handoff.png, failover.png and steady.png into dir and
// returns their paths relative to relTo (for links in BENCHMARKS.md).
func (r *Report) WritePlots(dir, relTo string) ([]string, error) {
	var written []string
	rel := func(p string) string {
		if s, err := filepath.Rel(relTo, p); err == nil {
			return filepath.ToSlash(s)
		}
		return p
	}
	if len(r.Handoff) > 0 {
		series := map[Lib][]float64{}
		for lib, h := range r.Handoff {
			series[lib] = toMs(h.FromRelease.Samples, 0)
		}
		var marks []mark
		if r.Limit.Acquire.N() > 0 {
			marks = append(marks, mark{fmt.Sprintf("raw-call limit, p50 %s", fmtDur(r.Limit.Acquire.P50())), float64(r.Limit.Acquire.P50()) / 1e6, markLimit})
		}
		marks = append(marks,
			mark{fmt.Sprintf("target p50 %v", HandoffP50Target), float64(HandoffP50Target) / 1e6, markP50},
			mark{fmt.Sprintf("target p99 %v", HandoffP99Target), float64(HandoffP99Target) / 1e6, markMax})
		path := filepath.Join(dir, "handoff.png")
		title := fmt.Sprintf("Handoff after release: release answered → OnStartedLeading (%s)", r.Opts.HandoffTimings)
		if err := cdfPlot(title, "latency, ms (log scale)", series, marks, path); err != nil {
			return written, fmt.Errorf("handoff plot: %w", err)
		}
		written = append(written, rel(path))
	}
	if len(r.Failover) > 0 {
		L := r.Opts.FailoverTimings.Lease
		series := map[Lib][]float64{}
		for lib, d := range r.Failover {
			series[lib] = toMs(d.Samples, L)
		}
		marks := []mark{
			{fmt.Sprintf("target p50 L+%v", FailoverP50Over), float64(FailoverP50Over) / 1e6, markP50},
			{fmt.Sprintf("target max L+%v", FailoverMaxOver), float64(FailoverMaxOver) / 1e6, markMax},
		}
		path := filepath.Join(dir, "failover.png")
		title := fmt.Sprintf("Failover after a crash: last renewal → OnStartedLeading, minus LeaseDuration (%s)", r.Opts.FailoverTimings)
		xlabel := "ms past L (log scale)"
		for _, d := range r.Failover {
			if d.N() > 0 && d.Min() <= L {
				xlabel = fmt.Sprintf("ms past L (log scale; ≤ 0 drawn at %g)", minPlotMs)
			}
		}
		if err := cdfPlot(title, xlabel, series, marks, path); err != nil {
			return written, fmt.Errorf("failover plot: %w", err)
		}
		written = append(written, rel(path))
	}
	if len(r.Steady) > 0 {
		path := filepath.Join(dir, "steady.png")
		if err := steadyPlot(r, path); err != nil {
			return written, fmt.Errorf("steady plot: %w", err)
		}
		written = append(written, rel(path))
	}
	return written, nil
}
