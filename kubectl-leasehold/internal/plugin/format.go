package plugin

import (
	"fmt"
	"time"
)

// none is what tables show for an empty value, as kubectl does.
const none = "<none>"

// humanDuration prints d compactly, with more precision the shorter it is:
// 850ms, 1.2s, 12s, 5m3s, 12m, 3h4m, 2d3h. Leases renew every few seconds, so
// tenths of a second matter below 10s.
func humanDuration(d time.Duration) string {
	if d < 0 {
		return "-" + humanDuration(-d)
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", float64(d.Round(100*time.Millisecond))/float64(time.Second))
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < 10*time.Minute:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// seconds prints a whole number of seconds as a duration (15s, 1m0s).
func seconds(s int32) string {
	return (time.Duration(s) * time.Second).String()
}

// orNone returns s, or <none> if s is empty.
func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// clock prints a local time of day with milliseconds, for timelines.
func clock(t time.Time) string { return t.Format("15:04:05.000") }
