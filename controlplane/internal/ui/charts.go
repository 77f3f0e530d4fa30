package ui

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"image/color"
	"math"
	"regexp"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// chartBarColor is the fill of the bars; tests count the bars by it.
const chartBarColor = "#4f7cac"

// dayChart is a bar chart of one count per UTC day, drawn on the server.
type dayChart struct {
	Hook  string // data-test of the figure
	Title string
	YUnit string
	Start time.Time // first day (00:00 UTC)
	Count []int64   // one per day
}

// Total is the sum of the bars.
func (c *dayChart) Total() int64 {
	var n int64
	for _, v := range c.Count {
		n += v
	}
	return n
}

// Days with at least one certificate.
func (c *dayChart) NonZero() int {
	n := 0
	for _, v := range c.Count {
		if v > 0 {
			n++
		}
	}
	return n
}

// Rows is the chart's data as a table (for screen readers and for those
// who want the numbers).
func (c *dayChart) Rows() []chartRow {
	out := make([]chartRow, 0, len(c.Count))
	for i, v := range c.Count {
		out = append(out, chartRow{Day: c.Start.AddDate(0, 0, i), N: v})
	}
	return out
}

type chartRow struct {
	Day time.Time
	N   int64
}

var svgProlog = regexp.MustCompile(`(?s)^.*?<svg `)

// chartFont is what the SVG text asks the browser for: the page's own
// sans-serif, not the metric-compatible font gonum measured with.
var chartFontFamily = regexp.MustCompile(`font-family:[^;"]*`)

// SVG renders the chart as an inline <svg> element.
func (c *dayChart) SVG() (template.HTML, error) {
	p := plot.New()
	sans := font.Font{Typeface: "Liberation", Variant: "Sans"}
	p.Title.TextStyle.Font = font.From(sans, 11)
	p.X.Label.TextStyle.Font = font.From(sans, 10)
	p.Y.Label.TextStyle.Font = font.From(sans, 10)
	p.X.Tick.Label.Font = font.From(sans, 9)
	p.Y.Tick.Label.Font = font.From(sans, 9)
	grey := color.RGBA{R: 0x57, G: 0x60, B: 0x6a, A: 0xff}
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Color = grey
		a.Tick.Color = grey
		a.Tick.Label.Color = grey
		a.Label.TextStyle.Color = grey
	}
	p.BackgroundColor = nil
	p.Y.Label.Text = c.YUnit
	p.X.Label.Text = "day (UTC)"

	vals := make(plotter.Values, len(c.Count))
	var maxV int64
	for i, v := range c.Count {
		vals[i] = float64(v)
		maxV = max(maxV, v)
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(3))
	if err != nil {
		return "", fmt.Errorf("chart %s: %w", c.Hook, err)
	}
	bars.LineStyle.Width = 0
	bars.Color = mustHexColor(chartBarColor)
	p.Add(bars)
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.X.Min, p.X.Max = -1, float64(len(c.Count))
	p.Y.Min = 0
	p.Y.Max = math.Max(1, float64(maxV)*1.08)
	var ticks plot.ConstantTicks
	for i := 0; i < len(c.Count); i += 15 {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: c.Start.AddDate(0, 0, i).Format("Jan 02")})
	}
	p.X.Tick.Marker = ticks
	p.Y.Tick.Marker = integerTicks{}

	canvas := vgsvg.New(vg.Points(440), vg.Points(200))
	p.Draw(draw.New(canvas))
	var buf bytes.Buffer
	if _, err := canvas.WriteTo(&buf); err != nil {
		return "", err
	}
	// Inline: drop the XML prolog, make it scale with the page, say what
	// it shows.
	out := svgProlog.ReplaceAllLiteralString(buf.String(), "")
	out = chartFontFamily.ReplaceAllLiteralString(out, "font-family:system-ui, sans-serif")
	desc := fmt.Sprintf("%s: %d in total over %d days from %s", c.Title, c.Total(), len(c.Count), c.Start.Format("2006-01-02"))
	head := fmt.Sprintf(`<svg class="chart" role="img" aria-label="%s" data-test="%s-svg" data-total="%d" data-points="%d" preserveAspectRatio="xMidYMid meet" `,
		html.EscapeString(desc), html.EscapeString(c.Hook), c.Total(), c.NonZero())
	return template.HTML(head + out), nil
}

// integerTicks labels the count axis with whole numbers only.
type integerTicks struct{}

func (integerTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	out := ts[:0]
	for _, t := range ts {
		if t.Value != math.Trunc(t.Value) {
			continue
		}
		if t.Label != "" {
			t.Label = fmtNum(int64(t.Value))
		}
		out = append(out, t)
	}
	return out
}

func mustHexColor(s string) color.RGBA {
	v, err := strconv.ParseUint(s[1:], 16, 32)
	if err != nil {
		panic(err)
	}
	return color.RGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 0xff}
}
