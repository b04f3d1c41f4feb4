package main

// about describes the other benchmarks make bench runs, and the cluster burst.
var about = map[string]string{
	"BenchmarkClusterBurst": "B sandbox jobs registered at once, through the server, on a cluster of one server and three clients " +
		"on this machine (each its own agent process, data dir and ports) whose raw_exec pool `burst` (size 2 per node, max 8) is a device group: " +
		"W = 6 warm sandboxes in the cluster, the jobs asking for `device \"agentkernel/sandbox\"` as README's Cluster section says. " +
		"Then the same burst of plain `raw_exec` jobs on the same cluster, the floor. Each job prints a line and sleeps 5 s; its clock starts " +
		"before its registration and stops when its first line is in its log file on its node, and the burst is complete (`all`) when every job printed. " +
		"Goals: warm hits = min(B, W), whichever nodes hold them; p90 at most 1.5x the raw_exec burst's; for B > W the jobs beyond W start cold " +
		"on some node at once (none left blocked).",
	"BenchmarkClaim": "Claim latency (pool package, `go test ./pool -bench Claim`): the Manager's claim " +
		"(a warm candidate from the watched inventory, one check-and-set write) beside a naive one " +
		"(list the dispatched jobs, read each one's allocations, then the same write), at pool sizes 5, 50 and 200.",
	"BenchmarkTree": "The copy mechanism of task files alone (package driver/taskfiles, no Nomad), on this machine's disk: " +
		"the copy in of an alloc/data of 10,000 files and 200 MiB into a sandbox, and the write-back after the command " +
		"changed 100 of them and added 100 (2 MiB); medians of 3.",
	"BenchmarkInSmall": "The copy in on a start's path alone (package driver/taskfiles, no Nomad), as under docker with runc " +
		"(alloc/data mounted, not copied): local/ and secrets/ holding 10 files of 200 bytes (two in a subdirectory, one 0600), " +
		"into a fresh sandbox tree, the state file included, beside the same with both dirs empty (what a start without files costs); " +
		"the difference is what 10 small files add to a start (goal: at most 3 ms). On this machine's disk (ext4 without a journal) " +
		"a file create costs 10 to 400 µs depending on recent deletions near it.",
	"BenchmarkMetricsOverhead": "What `metrics_address` costs: the plugin's CPU while sandbox jobs arrive at 2/s for 60 s on a raw_exec pool " +
		"(size 4, max_warm 8), without metrics and then with /metrics scraped every 5 s, each on a fresh agent; CPU from /proc over the " +
		"arrivals and 10 s after, in ms of CPU per second, and the ratio of the two from the same run.",
	"BenchmarkIdleTasks": "What running tasks cost while their commands are quiet: 10 sandbox tasks sleep, and the " +
		"CPU time of the plugin and of each task's helpers (its output shipper and its log holder) is read from /proc over 20 s; per task, in ms of CPU " +
		"per second (1 ms/s is 0.1% of a core), and the helpers' PSS per task. The plugin's share includes answering Nomad's TaskStats stream.",
	"BenchmarkStartTaskWarm": "StartTask on the warm path (claim plus launch of the command in the sandbox) " +
		"through the plugin's gRPC surface against a real agent, one pool per runtime on one agent: the " +
		"`raw_exec`, `exec` and docker templates of example/pools/ (docker with runc and with gVisor's runsc; `docker-runc-nobody` is " +
		"the runc one with `user = \"nobody\"` and no_new_privs, a sandbox unprivileged on the host). " +
		"The launch is one line on the sandbox's launch session, opened when it turned warm; StartTask returns once it is written " +
		"(the session's answer is awaited by the task's watcher). The claim hands out a sandbox the pool reserved in memory; " +
		"its record (a Nomad Variable write) follows in the background. `noop-rpc` is the floor under any StartTask: " +
		"a call that does nothing (Capabilities) over the same gRPC connection from the same idle state (at least 250 ms idle), " +
		"timed just before each start. Goal: p50 at most 15 ms on every runtime. " +
		"The `-10-files` rows start a task with 10 small files in local/ (copied in; goal: at most 3 ms above the same runtime without); " +
		"the `-10k-files-200MiB-data` rows add a 10,000-file, 200 MiB alloc/data. A sandbox whose processes are unprivileged on " +
		"the host (`docker-runc-nobody`) gets it by a mount in its own mount namespace (goal: p50 at most 100 ms, flat in the tree's size); the example " +
		"exec and runc templates are privileged (exec runs with group root and capabilities, the runc one as root), so theirs is " +
		"copied, as README's \"What a sandbox task sees and leaves\" says, and costs what BenchmarkTree measures. raw_exec sandboxes " +
		"use the task's own dirs (nothing copied), and gVisor ones copy.",
}
