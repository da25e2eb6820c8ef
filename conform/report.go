package conform

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// segsString lists an exchange's segments, the server's with the time they
// came (ms since the case began).
func segsString(segs []Seg) string {
	var parts []string
	for _, s := range segs {
		p := s.String()
		if s.Replayed {
			p += " (replayed)"
		}
		if s.From == "server" {
			p += fmt.Sprintf(" +%s", ms(s.At))
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// verdict is a side's outcome in a word or two.
func verdict(s Side) string {
	switch {
	case s.Pass() && s.Diff:
		return "pass, DIFF"
	case s.Pass():
		return "pass"
	case s.Known != "":
		return "breaks it (known)"
	default:
		return "FAIL"
	}
}

// WriteText writes the run for a terminal: each case, its rule, and what
// each side sent.
func WriteText(w io.Writer, r *Result) {
	width := 0
	for _, t := range r.Targets {
		width = max(width, len(t))
	}
	fmt.Fprintf(w, "tund conform: %d cases against %s\n", len(r.Cases), strings.Join(r.Targets, ", "))
	fmt.Fprintf(w, "segments: p: the peer, s: the server; FLAGS seq/ack relative to each side's ISN, (payload bytes), +time\n")
	for _, c := range r.Cases {
		fmt.Fprintf(w, "\n%s: %s\n  rule: %s\n", c.Name, c.Title, c.Rule)
		for _, s := range c.Sides {
			fmt.Fprintf(w, "  %-*s  %-16s %s\n", width, s.Target, verdict(s), segsString(s.Segs))
			if s.Err != "" {
				fmt.Fprintf(w, "  %-*s  %-16s %s\n", width, "", "", s.Err)
			}
			if s.Known != "" {
				fmt.Fprintf(w, "  %-*s  %-16s known: %s\n", width, "", "", s.Known)
			}
			if s.Why != "" {
				fmt.Fprintf(w, "  %-*s  %-16s why: %s\n", width, "", "", s.Why)
			}
		}
	}
	fmt.Fprintln(w)
	writeSummary(w, r)
}

func writeSummary(w io.Writer, r *Result) {
	for i, t := range r.Targets {
		pass, diff, known := 0, 0, 0
		for _, c := range r.Cases {
			s := c.Sides[i]
			if s.Pass() {
				pass++
			}
			if s.Diff {
				diff++
			}
			if s.Known != "" {
				known++
			}
		}
		fmt.Fprintf(w, "%s: %d of %d cases keep their rule", t, pass, len(r.Cases))
		if i > 0 {
			fmt.Fprintf(w, "; %d send other segments than Linux; %d break a rule for a documented reason", diff, known)
		}
		fmt.Fprintln(w)
	}
	if f := r.Failures(); len(f) > 0 {
		fmt.Fprintf(w, "FAILED: %d undocumented difference(s) from Linux:\n", len(f))
		for _, s := range f {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
}

// WriteMarkdown writes the run as CONFORMANCE.md has it: a table of the
// cases, then each case's segments side by side.
func WriteMarkdown(w io.Writer, r *Result, command string) {
	fmt.Fprintf(w, "# Conformance with Linux\n\n")
	fmt.Fprintf(w, "What tund's close path does, case by case, against the Linux kernel in the same run. Produced by:\n\n```sh\n%s\n```\n\n", command)
	fmt.Fprintf(w, "A scripted peer writes each case's segments from an address no kernel owns: into tund's TUN device, and into a veth pair to a namespace where the Linux kernel answers on kernel sockets with the same application. Each case checks one rule on every side; DIFF marks where tund's segments (flags, sequence and acknowledgment numbers relative to each side's ISN, payload lengths) differ from Linux's, timing aside. Both sides' FIN-WAIT-2 timeout is %v for the run.\n\n", FINWait2)
	fmt.Fprintf(w, "| case | rule |")
	for _, t := range r.Targets {
		fmt.Fprintf(w, " %s |", t)
	}
	fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("---|", len(r.Targets)))
	for _, c := range r.Cases {
		fmt.Fprintf(w, "| %s | %s |", c.Name, c.Rule)
		for _, s := range c.Sides {
			fmt.Fprintf(w, " %s |", verdict(s))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\n")
	writeSummary(w, r)
	fmt.Fprintf(w, "\n## Differences, and why\n\n")
	fmt.Fprintf(w, "Where Linux breaks a case's rule:\n\n")
	n := 0
	for _, c := range r.Cases {
		if s := c.Sides[0]; s.Known != "" {
			fmt.Fprintf(w, "- **%s**: %s\n", c.Name, s.Known)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintf(w, "None.\n")
	}
	fmt.Fprintf(w, "\nWhere tund breaks a rule that Linux keeps:\n\n")
	writeReasons(w, r, func(s Side) string { return s.Known })
	fmt.Fprintf(w, "\nWhere tund keeps the rule but its segments differ from Linux's (DIFF):\n\n")
	writeReasons(w, r, func(s Side) string {
		switch {
		case !s.Diff || s.Known != "":
			return ""
		case s.Why == "":
			return "(no reason recorded: look into it)"
		}
		return s.Why
	})
	fmt.Fprintf(w, "\n## The segments\n\n`p:` the peer, `s:` the server; FLAGS seq/ack relative to each side's ISN, (payload bytes), +time since the case began.\n")
	for _, c := range r.Cases {
		fmt.Fprintf(w, "\n### %s\n\n%s. Rule: %s.\n\n```\n", c.Name, c.Title, c.Rule)
		for _, s := range c.Sides {
			fmt.Fprintf(w, "%s (%s): %s\n", s.Target, verdict(s), segsString(s.Segs))
			if s.Err != "" {
				fmt.Fprintf(w, "  %s\n", s.Err)
			}
		}
		fmt.Fprintf(w, "```\n")
	}
}

// writeReasons lists each case's reason, as reason gives it for a side, once
// for all the sides that share it.
func writeReasons(w io.Writer, r *Result, reason func(Side) string) {
	n := 0
	for _, c := range r.Cases {
		var targets []string
		text := ""
		for _, s := range c.Sides[1:] {
			if why := reason(s); why != "" {
				targets, text = append(targets, s.Target), why
			}
		}
		if len(targets) > 0 {
			fmt.Fprintf(w, "- **%s** (%s): %s\n", c.Name, strings.Join(targets, ", "), text)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintf(w, "None.\n")
	}
}
