package simulate

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// timeline is what the SVG draws, captured at the end of a run.
type timeline struct {
	title   string
	summary []string
	groups  []string
	slots   int
	windows []windowSpan
	cycles  []cycle
	kills   []timelineKill
	outages []span
	jumps   []span
	end     time.Time
}

type windowSpan struct {
	from, to, cutoff time.Time
}

type timelineKill struct {
	at          time.Time
	group, lane int // lane -1: the node held no slot
	phase       int
}

func (s *sim) timeline(r *Report) *timeline {
	tl := &timeline{groups: s.groupNames, slots: s.cfg.Slots, outages: s.outages, jumps: s.jumps, end: s.now}
	if r.Complete {
		tl.end = s.rounds[len(s.rounds)-1].end
	}
	for _, c := range s.cycles {
		cc := *c
		if cc.released.IsZero() {
			cc.released = tl.end
		}
		tl.cycles = append(tl.cycles, cc)
	}
	for _, k := range s.kills {
		n := s.nodes[k.node]
		lane := -1
		for _, c := range tl.cycles {
			if c.node == k.node && !k.at.Before(c.acquired) && !k.at.After(c.released) {
				lane = c.lane
				break
			}
		}
		tl.kills = append(tl.kills, timelineKill{at: k.at, group: n.group, lane: lane, phase: k.phase})
	}
	mode := "offpeak agents (watch)"
	if r.PollInterval != nil {
		mode = fmt.Sprintf("FleetLock clients polling every %s", r.PollInterval)
	}
	tl.title = fmt.Sprintf("offpeak simulate — %d nodes, %d group(s) × %d slot(s), %s locker, %s, policy %s",
		r.Nodes, r.Groups, r.Slots, r.Locker, mode, r.Policy)
	ratio := "incomplete"
	if r.Complete {
		ratio = fmt.Sprintf("makespan %s, ideal %s, ratio %.3f", r.Makespan, r.IdealMakespan, r.Ratio)
	}
	tl.summary = []string{
		fmt.Sprintf("%s · reboot %s + grace %s · hand-off p50 %s, p99 %s · %d reboots in %d window(s) · max holders per group %d/%d · lock requests per node %.1f",
			ratio, r.RebootTime, r.Grace, r.Handoff.P50, r.Handoff.P99, r.Reboots, len(r.RebootsPerWindow), maxOf(r.MaxHolders), r.Slots, r.LockRequests.Mean),
		fmt.Sprintf("first staged %s · seed %d · faults %s · %d invariant violation(s)", r.From.UTC().Format(time.RFC3339), r.Seed, r.Faults, r.Violations),
	}
	// Windows around the activity.
	from, to := tl.activity()
	for w := range s.cal.Windows(from) {
		if !w.Start.Before(to) {
			break
		}
		tl.windows = append(tl.windows, windowSpan{from: w.Start, to: w.End, cutoff: w.RebootUntil})
	}
	return tl
}

func maxOf(m map[string]int) int {
	v := 0
	for _, n := range m {
		v = max(v, n)
	}
	return v
}

// activity is the span from the first grant to the last release.
func (tl *timeline) activity() (time.Time, time.Time) {
	var from, to time.Time
	for _, c := range tl.cycles {
		if from.IsZero() || c.acquired.Before(from) {
			from = c.acquired
		}
		if c.released.After(to) {
			to = c.released
		}
	}
	if from.IsZero() {
		return tl.end, tl.end.Add(time.Hour)
	}
	return from, to
}

// segment is one drawn stretch of the x axis; gaps between segments are
// compressed to a break mark.
type segment struct {
	from, to time.Time
	x0, x1   float64
}

const (
	svgWidth    = 1600.0
	svgLeft     = 120.0
	svgRight    = 20.0
	svgBreak    = 22.0
	mergeGap    = 45 * time.Minute
	segmentPad  = 10 * time.Minute
	maxPlotRows = 700.0
)

// segments merges the windows and every cycle into drawn stretches.
func (tl *timeline) segments() []segment {
	from, to := tl.activity()
	var iv []span
	for _, w := range tl.windows {
		a, b := maxTime(w.from, from.Add(-segmentPad)), minTime(w.to, to.Add(segmentPad))
		if a.Before(b) {
			iv = append(iv, span{a, b})
		}
	}
	for _, c := range tl.cycles {
		iv = append(iv, span{c.acquired.Add(-segmentPad), c.released.Add(segmentPad)})
	}
	if len(iv) == 0 {
		iv = append(iv, span{from, to})
	}
	slices.SortFunc(iv, func(a, b span) int { return a.from.Compare(b.from) })
	var merged []span
	for _, x := range iv {
		if n := len(merged); n > 0 && !x.from.After(merged[n-1].to.Add(mergeGap)) {
			merged[n-1].to = maxTime(merged[n-1].to, x.to)
			continue
		}
		merged = append(merged, x)
	}
	var total time.Duration
	for _, m := range merged {
		total += m.to.Sub(m.from)
	}
	avail := svgWidth - svgLeft - svgRight - svgBreak*float64(len(merged)-1)
	scale := avail / float64(total)
	segs := make([]segment, 0, len(merged))
	x := svgLeft
	for _, m := range merged {
		w := float64(m.to.Sub(m.from)) * scale
		segs = append(segs, segment{from: m.from, to: m.to, x0: x, x1: x + w})
		x += w + svgBreak
	}
	return segs
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// xOf maps t to a pixel; times in a gap clamp to the nearer edge.
func xOf(segs []segment, t time.Time) (float64, bool) {
	for i, s := range segs {
		if t.Before(s.from) {
			if i == 0 {
				return s.x0, false
			}
			return segs[i-1].x1, false
		}
		if !t.After(s.to) {
			f := float64(t.Sub(s.from)) / float64(s.to.Sub(s.from))
			return s.x0 + f*(s.x1-s.x0), true
		}
	}
	return segs[len(segs)-1].x1, false
}

// WriteSVG draws the run's timeline. It is readable at a thousand nodes:
// one lane per slot per group, a bar per slot tenure.
func (r *Report) WriteSVG(w io.Writer) error {
	tl := r.timeline
	if tl == nil {
		return fmt.Errorf("no timeline recorded")
	}
	segs := tl.segments()
	rows := len(tl.groups) * tl.slots
	killRow := len(tl.kills) > 0
	extra := 0
	if killRow {
		extra = len(tl.groups)
	}
	rowH := math.Min(18, math.Max(3, maxPlotRows/float64(rows+extra)))
	groupGap := math.Min(10, rowH)
	top := 150.0
	plotH := float64(rows+extra)*rowH + float64(len(tl.groups)-1)*groupGap
	height := top + plotH + 70

	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	p(`<rect width="100%%" height="100%%" fill="#fff"/>` + "\n")
	p(`<text x="%.0f" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", svgLeft-100, esc(tl.title))
	for i, line := range tl.summary {
		p(`<text x="%.0f" y="%d" font-size="12.5" fill="#333">%s</text>`+"\n", svgLeft-100, 44+18*i, esc(line))
	}

	// Legend.
	lx := svgLeft - 100
	legend := func(swatch, label string) {
		p(`<g transform="translate(%.0f,76)">%s<text x="22" y="11">%s</text></g>`+"\n", lx, swatch, esc(label))
		lx += 34 + 7.1*float64(len([]rune(label)))
	}
	legend(`<rect width="16" height="13" fill="#dbe9f7" stroke="#9dbfe3"/>`, "maintenance window")
	legend(`<rect width="16" height="13" fill="#3b6fb6"/>`, "reboot (slot held)")
	legend(`<rect width="16" height="13" fill="#5aa469"/>`, "post-boot grace + checks")
	legend(`<rect width="16" height="13" fill="#9e9e9e"/>`, "held, no reboot")
	legend(`<rect width="16" height="13" fill="#d62728"/>`, "post-boot check failed (frozen)")
	legend(`<rect width="16" height="13" fill="#d62728" fill-opacity="0.18"/>`, "lock-service outage")
	legend(`<path d="M3 1 L13 12 M13 1 L3 12" stroke="#000" stroke-width="2"/>`, "agent killed")
	legend(`<line x1="8" y1="0" x2="8" y2="14" stroke="#e67e00" stroke-width="2"/>`, "clock jump")
	legend(`<line x1="8" y1="0" x2="8" y2="14" stroke="#5b8fd0" stroke-dasharray="4 3"/>`, "window cutoff")

	// Break marks and segment date labels.
	axisY := top - 8
	for i, sg := range segs {
		mid := sg.from.Add(sg.to.Sub(sg.from) / 2).UTC()
		switch w := sg.x1 - sg.x0; {
		case w >= 150:
			p(`<text x="%.1f" y="%.0f" font-size="11.5" font-weight="bold">%s</text>`+"\n", sg.x0+2, top-40, mid.Format("Mon 2006-01-02 UTC"))
		case w >= 42:
			p(`<text x="%.1f" y="%.0f" font-size="10" font-weight="bold">%s</text>`+"\n", sg.x0+1, top-40, mid.Format("Mon"))
		}
		if i > 0 {
			gx := (segs[i-1].x1 + sg.x0) / 2
			gap := sg.from.Sub(segs[i-1].to)
			p(`<path d="M%.1f %.0f l-5 8 l10 6 l-10 6 l10 6 l-5 8" fill="none" stroke="#777"/>`+"\n", gx, top-4)
			p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#bbb" stroke-dasharray="2 3"/>`+"\n", gx, top+30, gx, top+plotH)
			label := "…" + shortDur(gap) + "…"
			if len(segs) > 8 {
				label = compactDur(gap)
			}
			p(`<text x="%.1f" y="%.0f" font-size="9.5" fill="#555" text-anchor="middle">%s</text>`+"\n", gx, top+plotH+14, esc(label))
		}
	}
	// Windows.
	for _, wdw := range tl.windows {
		for _, sg := range segs {
			a, bb := maxTime(wdw.from, sg.from), minTime(wdw.to, sg.to)
			if !a.Before(bb) {
				continue
			}
			x0, _ := xOf(segs, a)
			x1, _ := xOf(segs, bb)
			p(`<rect x="%.1f" y="%.0f" width="%.1f" height="%.1f" fill="#dbe9f7" stroke="#9dbfe3"/>`+"\n", x0, top, x1-x0, plotH)
			if !wdw.cutoff.Before(a) && wdw.cutoff.Before(bb) {
				xc, _ := xOf(segs, wdw.cutoff)
				p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.1f" stroke="#5b8fd0" stroke-dasharray="4 3"><title>cutoff: no reboot starts after this</title></line>`+"\n", xc, top, xc, top+plotH)
				if len(segs) <= 8 {
					p(`<text x="%.1f" y="%.1f" font-size="9.5" fill="#3f6fae" text-anchor="end">cutoff</text>`+"\n", xc-2, top+plotH+12)
				}
			}
		}
	}
	// Ticks.
	for _, sg := range segs {
		p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#444"/>`+"\n", sg.x0, axisY, sg.x1, axisY)
		step := tickStep(sg)
		t := sg.from.UTC().Truncate(step)
		if t.Before(sg.from) {
			t = t.Add(step)
		}
		for ; !t.After(sg.to); t = t.Add(step) {
			x, _ := xOf(segs, t)
			p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#444"/>`, x, axisY-4, x, axisY)
			p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.1f" stroke="#000" stroke-opacity="0.07"/>`, x, top, x, top+plotH)
			label := t.Format("15:04")
			if t.Hour() == 0 && t.Minute() == 0 {
				label = t.Format("Jan 2")
			}
			p(`<text x="%.1f" y="%.0f" font-size="10.5" text-anchor="middle">%s</text>`+"\n", x, axisY-7, label)
		}
	}
	p(`<text x="%.0f" y="%.0f" font-size="11" fill="#555">time (UTC)</text>`+"\n", svgLeft-100, axisY-7)

	// Lanes.
	laneY := func(g, lane int) float64 {
		per := tl.slots
		if killRow {
			per++
		}
		return top + float64(g*per+lane)*rowH + float64(g)*groupGap
	}
	for g, name := range tl.groups {
		y0 := laneY(g, 0)
		if len(tl.groups) <= 40 || g%max(1, len(tl.groups)/40) == 0 {
			label := name
			if tl.slots > 1 && rowH*float64(tl.slots) >= 24 {
				label = fmt.Sprintf("%s (%d slots)", name, tl.slots)
			}
			p(`<text x="%.0f" y="%.1f" font-size="%.1f" text-anchor="end">%s</text>`+"\n", svgLeft-16, y0+math.Min(11, rowH*float64(tl.slots)/2+4), math.Min(11.5, math.Max(7, rowH*1.5)), esc(label))
		}
		if rowH >= 9 {
			for k := range tl.slots {
				p(`<text x="%.0f" y="%.1f" font-size="8.5" fill="#777" text-anchor="end">%d</text>`, svgLeft-2, laneY(g, k)+rowH*0.75, k+1)
			}
			b.WriteString("\n")
		}
		if killRow && rowH >= 7 {
			p(`<text x="%.0f" y="%.1f" font-size="8.5" fill="#777" text-anchor="end">kills</text>`+"\n", svgLeft-2, laneY(g, tl.slots)+rowH*0.75)
		}
		if g > 0 {
			p(`<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#999" stroke-width="0.6"/>`+"\n", svgLeft, y0-groupGap/2, svgWidth-svgRight, y0-groupGap/2)
		}
	}
	// Outages under the bars, jumps over them.
	for _, o := range tl.outages {
		if !o.from.Before(segs[len(segs)-1].to) || !o.to.After(segs[0].from) {
			continue
		}
		x0, _ := xOf(segs, o.from)
		x1, _ := xOf(segs, o.to)
		p(`<rect x="%.1f" y="%.0f" width="%.1f" height="%.1f" fill="#d62728" fill-opacity="0.18"/>`+"\n", x0, top, math.Max(x1-x0, 1.5), plotH)
	}
	// Bars.
	pad := math.Max(0.3, rowH*0.12)
	bar := func(x0, x1, y float64, fill string) {
		if x1-x0 < 0.6 {
			x1 = x0 + 0.6
		}
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x0, y+pad, x1-x0, rowH-2*pad, fill)
	}
	for i, c := range tl.cycles {
		y := laneY(c.group, min(c.lane, tl.slots-1))
		xa, _ := xOf(segs, c.acquired)
		xr, _ := xOf(segs, c.released)
		switch {
		case c.rebootAt.IsZero():
			bar(xa, xr, y, "#9e9e9e")
		default:
			xb, _ := xOf(segs, c.rebootAt)
			if xb-xa > 0.6 {
				bar(xa, xb, y, "#9e9e9e")
			}
			boot := c.bootAt
			if boot.IsZero() {
				boot = c.released
			}
			xo, _ := xOf(segs, boot)
			bar(xb, xo, y, "#3b6fb6")
			if !c.bootAt.IsZero() {
				if !c.failedAt.IsZero() {
					xf, _ := xOf(segs, c.failedAt)
					bar(xo, xf, y, "#5aa469")
					bar(xf, xr, y, "#d62728")
				} else {
					bar(xo, xr, y, "#5aa469")
				}
			}
		}
		// A hairline at the start tells back-to-back tenures apart.
		if rowH >= 6 && xr-xa >= 4 {
			p(`<rect x="%.1f" y="%.1f" width="0.5" height="%.1f" fill="#fff"/>`, xa, y+pad, rowH-2*pad)
		}
		if i%8 == 7 {
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	for _, k := range tl.kills {
		x, ok := xOf(segs, k.at)
		if !ok {
			continue
		}
		lane := k.lane
		if lane < 0 || lane >= tl.slots {
			lane = tl.slots
			if !killRow {
				continue
			}
		}
		y := laneY(k.group, lane) + rowH/2
		r := math.Max(2.5, math.Min(5, rowH*0.4))
		p(`<path d="M%.1f %.1f l%.1f %.1f m0 %.1f l%.1f %.1f" stroke="#000" stroke-width="1.6"><title>%s</title></path>`+"\n",
			x-r, y-r, 2*r, 2*r, -2*r, -2*r, 2*r, esc("agent killed: "+killPhaseNames[k.phase]+", "+k.at.UTC().Format(time.RFC3339)))
	}
	for _, j := range tl.jumps {
		x, ok := xOf(segs, j.from)
		if !ok {
			continue
		}
		p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.1f" stroke="#e67e00" stroke-width="2"><title>%s</title></line>`+"\n",
			x, top-2, x, top+plotH, esc("clock jump +"+shortDur(j.to.Sub(j.from))+" at "+j.from.UTC().Format(time.RFC3339)))
		p(`<text x="%.1f" y="%.1f" font-size="10" fill="#e67e00">+%s</text>`+"\n", x+3, top+plotH+26, esc(shortDur(j.to.Sub(j.from))))
	}
	p(`<text x="%.0f" y="%.0f" font-size="10.5" fill="#555">x axis: only the windows and slot tenures are drawn; zigzags mark compressed gaps (gap length shown below). One lane per slot; a bar runs from slot granted to slot released.</text>`+"\n",
		svgLeft-100, height-12)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func tickStep(sg segment) time.Duration {
	pxPerHour := (sg.x1 - sg.x0) / sg.to.Sub(sg.from).Hours()
	for _, st := range []time.Duration{10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		if pxPerHour*st.Hours() >= 46 {
			return st
		}
	}
	return 48 * time.Hour
}

func shortDur(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		days := int(d / (24 * time.Hour))
		h := int((d % (24 * time.Hour)).Round(time.Hour) / time.Hour)
		return fmt.Sprintf("%dd%dh", days, h)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmtDur(d.Round(time.Second))
	}
}

// compactDur labels a compressed gap in a few characters ("21h", "2d").
func compactDur(d time.Duration) string {
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd", int((d+12*time.Hour)/(24*time.Hour)))
	}
	return fmt.Sprintf("%dh", int(d.Round(time.Hour)/time.Hour))
}

func esc(s string) string { return html.EscapeString(s) }
