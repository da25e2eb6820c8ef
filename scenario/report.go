package scenario

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/tund/tund/admin"
)

// WriteText prints a result for a person: the ladder diagrams of tund's
// records, the states each side showed, the numbers, and the explanation.
func WriteText(w io.Writer, r *Result) {
	fmt.Fprintf(w, "Scenario %s: %s\n", r.Name, r.Title)
	if len(r.TundArgs) > 0 {
		fmt.Fprintf(w, "  tund %s\n", strings.Join(r.TundArgs, " "))
	}
	fmt.Fprintln(w)
	if len(r.Records) > 0 {
		fmt.Fprintln(w, "tund's close record(s), from the segments that crossed the TUN device:")
		fmt.Fprintln(w)
		for _, rec := range r.Records {
			admin.WriteLadder(w, rec)
			fmt.Fprintln(w)
		}
	}
	if len(r.Observations) > 0 {
		fmt.Fprintln(w, "States seen: the kernel's socket (ss -tano in the namespace) and tund's (its /conns):")
		t0 := r.Observations[0].At
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, o := range r.Observations {
			fmt.Fprintf(tw, "  +%.3fs\t%s\n", o.At.Sub(t0).Seconds(), o.Label)
			if len(o.Kernel) == 0 {
				fmt.Fprintln(tw, "\t  kernel\t(no socket)")
			}
			for _, s := range o.Kernel {
				fmt.Fprintf(tw, "\t  kernel\t%s\t%v\t%v\t%s\n", s.State, s.Local, s.Peer, s.Timer)
			}
			if len(o.Tund) == 0 {
				fmt.Fprintln(tw, "\t  tund\t(no connection)")
			}
			for _, c := range o.Tund {
				fmt.Fprintf(tw, "\t  tund\t%s\t%v\t%v\t\n", c.State, c.Local, c.Remote)
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Wire) > 0 {
		fmt.Fprintln(w, "On the wire (tund's pcap):")
		for _, l := range r.Wire {
			fmt.Fprintln(w, "  "+l)
		}
		fmt.Fprintln(w)
	}
	if len(r.Runs) > 0 {
		fmt.Fprintln(w, "Runs:")
		writeRuns(w, r.Runs)
		fmt.Fprintln(w)
	}
	if len(r.Runs) == 0 && len(r.Numbers) > 0 {
		fmt.Fprintln(w, "Numbers:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range sortedKeys(r.Numbers) {
			fmt.Fprintf(tw, "  %s\t%g\n", k, r.Numbers[k])
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "What happened, and why:")
	fmt.Fprintln(w, wrap(r.Explanation, 78, "  "))
	if r.Error != "" {
		fmt.Fprintf(w, "\nFAILED: %s\n", r.Error)
	}
}

// wrap folds text into lines of at most width columns, each indented.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString("\n\n")
		}
		line := indent
		for _, word := range strings.Fields(para) {
			if len(line) > len(indent) && len(line)+1+len(word) > width {
				b.WriteString(line + "\n")
				line = indent
			}
			if len(line) > len(indent) {
				line += " "
			}
			line += word
		}
		b.WriteString(line)
	}
	return b.String()
}
