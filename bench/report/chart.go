package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"
)

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{30, 30, 30, 255}
	grey  = color.RGBA{200, 200, 200, 255}
	// One colour per tool, in toolOrder; others cycle through extra.
	toolColor = map[string]color.RGBA{
		"knit":        {31, 119, 180, 255},
		"knit-cni":    {23, 190, 207, 255},
		"floor":       {44, 160, 44, 255},
		"cni":         {214, 39, 40, 255},
		"netavark":    {255, 127, 14, 255},
		"knit-noport": {148, 103, 189, 255},
		"knit-cli":    {0, 0, 128, 255},
		"docker":      {188, 189, 34, 255},
	}
	extra = []color.RGBA{{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}}
)

const (
	chartW   = 1200
	panelH   = 380
	marginL  = 100
	marginR  = 30
	titleH   = 70
	legendH  = 88 // up to three rows of tools
	xLabelsH = 50
)

// writeChart draws attach p50 (top) and detach p50 (bottom) per tool at
// each level as grouped bars on a log scale, each bar labelled with its
// value in ms.
func writeChart(d *data, path string) error {
	ts := d.tools("Attach")
	lv := d.levels("Attach")
	h := titleH + legendH + 2*(panelH+xLabelsH)
	img := image.NewRGBA(image.Rect(0, 0, chartW, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	title := "ATTACH AND DETACH P50 PER CONTAINER, ONE PUBLISHED PORT (MS, LOG SCALE)"
	drawText(img, (chartW-textWidth(title, 2))/2, 14, title, 2, black)
	sub := strings.TrimSpace(d.config["date"] + "  " + d.config["cpu"] + "  MODE " + d.config["mode"])
	drawText(img, (chartW-textWidth(sub, 1))/2, 42, sub, 1, black)

	colors := map[string]color.RGBA{}
	for i, t := range ts {
		c, ok := toolColor[t]
		if !ok {
			c = extra[i%len(extra)]
		}
		colors[t] = c
	}
	// Legend, wrapped onto a second row when it does not fit.
	x, ly := marginL, titleH
	for _, t := range ts {
		wdt := 22 + textWidth(label(t), 2) + 30
		if x > marginL && x+wdt > chartW-marginR {
			x, ly = marginL, ly+24
		}
		fill(img, x, ly+4, x+16, ly+20, colors[t])
		drawText(img, x+22, ly+5, label(t), 2, black)
		x += wdt
	}
	if len(ts) == 0 || len(lv) == 0 {
		return save(img, path)
	}
	// One log scale for both panels, whole decades.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, op := range []string{"Attach", "Detach"} {
		for _, t := range ts {
			for _, n := range lv {
				if v, ok := d.p50(op, t, n); ok && v > 0 {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		return save(img, path)
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	for i, op := range []string{"Attach", "Detach"} {
		top := titleH + legendH + i*(panelH+xLabelsH)
		panel(img, d, op, ts, lv, colors, top, dlo, dhi)
	}
	return save(img, path)
}

func panel(img *image.RGBA, d *data, op string, ts []string, lv []int, colors map[string]color.RGBA, top int, dlo, dhi float64) {
	plotTop, plotBot := top+30, top+panelH
	plotL, plotR := marginL, chartW-marginR
	drawText(img, plotL, top+4, strings.ToUpper(op)+" P50", 2, black)
	y := func(v float64) int {
		f := (math.Log10(v) - dlo) / (dhi - dlo)
		return plotBot - int(f*float64(plotBot-plotTop))
	}
	// Decade grid and labels.
	for e := dlo; e <= dhi; e++ {
		v := math.Pow(10, e)
		yy := y(v)
		fill(img, plotL, yy, plotR, yy+1, grey)
		s := strings.TrimSuffix(strings.TrimSuffix(trimFloat(v), ".0"), ".00") + " MS"
		drawText(img, plotL-10-textWidth(s, 1), yy-3, s, 1, black)
	}
	fill(img, plotL, plotTop, plotL+1, plotBot, black)
	fill(img, plotL, plotBot, plotR, plotBot+1, black)
	groupW := (plotR - plotL) / len(lv)
	barW := groupW / (len(ts) + 1)
	for gi, n := range lv {
		gx := plotL + gi*groupW + barW/2
		for ti, t := range ts {
			v, ok := d.p50(op, t, n)
			bx := gx + ti*barW
			if !ok {
				drawText(img, bx+2, plotBot-12, "N/A", 1, black)
				continue
			}
			by := y(v)
			fill(img, bx+2, by, bx+barW-2, plotBot, colors[t])
			s := trimFloat(v)
			drawText(img, bx+barW/2-textWidth(s, 1)/2, by-10, s, 1, black)
		}
		lbl := fmt.Sprintf("%s CONTAINER", ordinal(n))
		drawText(img, plotL+gi*groupW+groupW/2-textWidth(lbl, 2)/2, plotBot+10, lbl, 2, black)
	}
}

// trimFloat prints v with 3 significant digits at most.
func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

func save(img image.Image, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
