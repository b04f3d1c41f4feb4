# make bench, storm: one of 50 sandbox jobs registered at once on pool "storm".
# The first line names the sandbox's own alloc dir (it holds the sandbox's alloc
# id), so a sandbox handed out twice shows in the output as well as in the task
# events; the sleep keeps every sandbox claimed while the others start.
job "bench-storm" {
  type = "batch"
  group "agent" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "agent" {
      driver = "agentkernel-pool"
      config {
        pool    = "storm"
        command = "/bin/sh"
        args    = ["-c", "echo sandbox $NOMAD_ALLOC_DIR; sleep 5"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
