package bench

import (
	"os"
	"strings"
)

// The section of BENCHMARKS.md that cmd/slowapi writes (test/slowapi),
// between these lines. WriteMarkdown writes the file wholesale: it keeps
// that section as the file has it.
const (
	slowAPIBegin = "<!-- slowapi:begin -->"
	slowAPIEnd   = "<!-- slowapi:end -->"
)

// keepSlowAPI returns doc, the BENCHMARKS.md about to be written at path,
// with the slowapi section of the file now at path (markers included)
// at its end. Any slowapi section inside doc (carried over in "Previous
// run") is dropped first, so that the section appears once.
func keepSlowAPI(path, doc string) string {
	doc = strings.TrimRight(cutSlowAPI(doc, nil), "\n") + "\n"
	old, err := os.ReadFile(path)
	if err != nil {
		return doc
	}
	var kept []string
	cutSlowAPI(string(old), &kept)
	if len(kept) == 0 {
		return doc
	}
	return doc + "\n" + kept[0]
}

// cutSlowAPI returns doc without its slowapi sections (from a begin line
// through its end line), appending each one cut to *cut if cut is not nil.
func cutSlowAPI(doc string, cut *[]string) string {
	var out, section strings.Builder
	in := false
	for _, line := range strings.SplitAfter(doc, "\n") {
		switch t := strings.TrimSpace(line); {
		case !in && t == slowAPIBegin:
			in = true
			section.Reset()
			section.WriteString(line)
		case in && t == slowAPIEnd:
			in = false
			section.WriteString(strings.TrimRight(line, "\n") + "\n")
			if cut != nil {
				*cut = append(*cut, section.String())
			}
		case in:
			section.WriteString(line)
		default:
			out.WriteString(line)
		}
	}
	if in {
		out.WriteString(section.String()) // no end line: not a section
	}
	return out.String()
}
