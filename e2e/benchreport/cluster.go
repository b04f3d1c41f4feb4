package main

import "strings"

// clusterBurst renders BenchmarkClusterBurst: a row per burst size.
func clusterBurst(w func(string, ...any), r *results) {
	var names []string
	for _, n := range r.order {
		if strings.HasPrefix(n, "BenchmarkClusterBurst/") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	w("## Cluster burst: sandbox jobs registered at once on 3 nodes\n\n%s\n\n", about["BenchmarkClusterBurst"])
	w("| burst | succeeded | warm hits (goal min(B, W)) | in the reserved sandbox | claimed twice | left blocked | nodes used | first line p50 / p90 / all | raw_exec p50 / p90 / all | p90 pool / raw_exec (goal at most 1.5x) |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		m := r.metrics[n]
		goal := min(m["jobs"], m["warm"])
		ratio := 0.0
		if m["raw-p90-ms"] > 0 {
			ratio = m["pool-p90-ms"] / m["raw-p90-ms"]
		}
		w("| %s | %s of %s | %s (%s) | %s | %s | %s | %s | %s / %s / %s ms | %s / %s / %s ms | %sx (%s) |\n",
			label(n, m), num(m["succeeded"]), num(m["jobs"]), num(m["hits"]), met(m["hits"] >= goal),
			num(m["in-reserved"]), num(m["claimed-twice"]), num(m["blocked"]), num(m["nodes"]),
			num(m["pool-p50-ms"]), num(m["pool-p90-ms"]), num(m["pool-all-ms"]),
			num(m["raw-p50-ms"]), num(m["raw-p90-ms"]), num(m["raw-all-ms"]), num(ratio), met(ratio > 0 && ratio <= 1.5))
	}
	w("\nWhere the time goes (medians): registration to Received (placement), Received to Started (the client's task setup, StartTask included, ")
	w("so a miss's wait for its cold sandbox too), and that wait alone:\n\n")
	w("| burst | pool: to Received | pool: to Started | miss: wait for a cold sandbox | raw_exec: to Received | raw_exec: to Started |\n|---|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		m := r.metrics[n]
		w("| %s | %s ms | %s ms | %s ms | %s ms | %s ms |\n", label(n, m), num(m["pool-received-ms"]), num(m["pool-setup-ms"]), num(m["miss-wait-ms"]),
			num(m["raw-received-ms"]), num(m["raw-setup-ms"]))
	}
	w("\n")
}

// label names a burst: its size, the warm sandboxes, and the scheduler
// algorithm when not Nomad's default.
func label(name string, m map[string]float64) string {
	l := "B = " + num(m["jobs"]) + ", W = " + num(m["warm"])
	if _, algo, ok := strings.Cut(name, ","); ok {
		l += ", " + algo
	}
	return l
}
