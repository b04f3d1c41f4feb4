package main

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Reading `go test -bench` output: each benchmark's metrics, and the
// benchmarks that did not run, with why.

// results holds every benchmark's metrics by name (without the -N suffix) and
// the benchmarks that were skipped or failed, with why.
type results struct {
	order   []string
	metrics map[string]map[string]float64
	notRun  []string
	perRun  []string // "per-run ..." log lines of BenchmarkJobStart
}

var (
	lineRe = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)
	skipRe = regexp.MustCompile(`^\s*--- (SKIP|FAIL): (Benchmark\S+)`)
	logRe  = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
	runRe  = regexp.MustCompile(`^\s+\S+\.go:\d+: per-run (.*)$`)
)

func (r *results) parseFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return r.parse(f)
}

func (r *results) parse(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lastLog := "" // a SKIP or FAIL says why in the log line before it (-v) or after it
	pending := ""
	for sc.Scan() {
		line := sc.Text()
		logLine := logRe.FindStringSubmatch(line)
		if pending != "" {
			why := lastLog
			if logLine != nil {
				why = logLine[1]
			}
			r.notRun = append(r.notRun, pending+": "+why)
			pending = ""
		}
		if logLine != nil {
			lastLog = logLine[1]
		}
		if m := runRe.FindStringSubmatch(line); m != nil {
			r.perRun = append(r.perRun, m[1])
			continue
		}
		if m := skipRe.FindStringSubmatch(line); m != nil {
			pending = m[2] + " " + strings.ToLower(m[1])
			continue
		}
		m := lineRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[4])
		if len(f) < 2 || len(f)%2 != 0 {
			continue
		}
		name := m[1]
		if r.metrics[name] == nil {
			r.metrics[name] = map[string]float64{}
			r.order = append(r.order, name)
		}
		r.metrics[name]["runs"], _ = strconv.ParseFloat(m[3], 64)
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil && f[i+1] != "ns/op" {
				r.metrics[name][f[i+1]] = v
			}
		}
	}
	if pending != "" {
		r.notRun = append(r.notRun, pending+": "+lastLog)
	}
	return sc.Err()
}

// has says whether a benchmark, or any of its sub-benchmarks, has a result.
func (r *results) has(family string) bool {
	return slices.ContainsFunc(r.order, func(n string) bool { return n == family || strings.HasPrefix(n, family+"/") })
}
