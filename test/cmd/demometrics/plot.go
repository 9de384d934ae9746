package main

import (
	"fmt"
	"image/color"
	"os"
	"sort"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// mark is a labelled instant: a signal.
type mark struct {
	label string
	at    time.Time
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// plotRun renders the run from Prometheus's query API into a PNG at path:
// each process's leader_election_master_status, the processes leading
// with the alerts' states, and the shards each member owns.
func plotRun(p *prometheus, path string, at0, end, electionEnd time.Time, marks []mark, shardKill mark) error {
	const step = 250 * time.Millisecond
	x := func(unix float64) float64 { return unix - float64(at0.UnixNano())/1e9 }

	status, err := p.queryRange(`leader_election_master_status{job="election"}`, at0, electionEnd, step)
	if err != nil {
		return err
	}
	leading, err := p.queryRange(`sum by (name) (leader_election_master_status{job="election"})`, at0, electionEnd, step)
	if err != nil {
		return err
	}
	alerts, err := p.queryRange(`ALERTS{alertname=~"LeaseholdNoLeader|LeaseholdSplitBrain"}`, at0, electionEnd, step)
	if err != nil {
		return err
	}
	owned, err := p.queryRange(`leasehold_shards_owned{job="shards"}`, electionEnd, end, step)
	if err != nil {
		return err
	}
	running, err := p.queryRange(`sum by (group) (leasehold_shards_owned{job="shards"})`, electionEnd, end, step)
	if err != nil {
		return err
	}

	newPlot := func(title, ylabel string) *plot.Plot {
		pl := plot.New()
		pl.Title.Text = title
		pl.X.Label.Text = "seconds since Prometheus started scraping"
		pl.Y.Label.Text = ylabel
		pl.Legend.Top = true
		pl.Add(plotter.NewGrid())
		return pl
	}
	addLine := func(pl *plot.Plot, label string, s series, offset float64, c color.Color, width vg.Length) error {
		xys := make(plotter.XYs, len(s.T))
		for i := range s.T {
			xys[i].X, xys[i].Y = x(s.T[i]), s.V[i]+offset
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.StepStyle = plotter.PostStep
		l.Color, l.Width = c, width
		pl.Add(l)
		pl.Legend.Add(label, l)
		return nil
	}
	addMarks := func(pl *plot.Plot, ymin, ymax float64, marks ...mark) error {
		for i, m := range marks {
			l, err := plotter.NewLine(plotter.XYs{{X: x(float64(m.at.UnixNano()) / 1e9), Y: ymin}, {X: x(float64(m.at.UnixNano()) / 1e9), Y: ymax}})
			if err != nil {
				return err
			}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			l.Color = color.Gray{Y: uint8(40 + 60*i)}
			pl.Add(l)
			pl.Legend.Add(m.label, l)
		}
		return nil
	}
	byLabel := func(ss []series, label string) []series {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Metric[label] < ss[j].Metric[label] })
		return ss
	}

	p1 := newPlot(fmt.Sprintf("leader_election_master_status{name=%q} per process", election), "leading (1) or not (0)")
	for i, s := range byLabel(status, "instance") {
		if err := addLine(p1, s.Metric["instance"], s, 0.03*float64(i), palette[i%len(palette)], vg.Points(2)); err != nil {
			return err
		}
	}
	if err := addMarks(p1, -0.1, 1.2, marks...); err != nil {
		return err
	}
	p1.Y.Min, p1.Y.Max = -0.1, 1.4

	p2 := newPlot("processes leading, and the alerts (pending 0.5, firing 1.5)", "processes")
	for _, s := range leading {
		if err := addLine(p2, "sum by (name) (leader_election_master_status)", s, 0, palette[0], vg.Points(2)); err != nil {
			return err
		}
	}
	for i, s := range byLabel(alerts, "alertname") {
		y := 0.5
		if s.Metric["alertstate"] == "firing" {
			y = 1.5
		}
		for j := range s.V {
			s.V[j] = y
		}
		if err := addLine(p2, s.Metric["alertname"]+" "+s.Metric["alertstate"], s, 0, palette[(i+3)%len(palette)], vg.Points(5)); err != nil {
			return err
		}
	}
	if err := addMarks(p2, 0, 2, marks...); err != nil {
		return err
	}
	p2.Y.Min, p2.Y.Max = 0, 2.6

	p3 := newPlot(fmt.Sprintf("leasehold_shards_owned{group=%q} per member, and their sum (%d shards)", group, shards), "shards owned")
	for i, s := range byLabel(owned, "instance") {
		if err := addLine(p3, s.Metric["instance"], s, 0.05*float64(i), palette[i%len(palette)], vg.Points(2)); err != nil {
			return err
		}
	}
	for _, s := range running {
		if err := addLine(p3, "sum", s, 0, palette[4], vg.Points(1)); err != nil {
			return err
		}
	}
	if err := addMarks(p3, 0, shards+1, shardKill); err != nil {
		return err
	}
	p3.Y.Min, p3.Y.Max = 0, shards+3

	plots := [][]*plot.Plot{{p1}, {p2}, {p3}}
	img := vgimg.New(vg.Points(900), vg.Points(900))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8), PadY: vg.Points(16)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
