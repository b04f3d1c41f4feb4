# make bench, step load: one sandbox job of a Poisson arrival stream on the
# pool the benchmark names (config.pool is set per run). The first line ends the
# start measurement; the sleep holds the sandbox a moment, as an agent would.
job "bench-step" {
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
        pool    = "step"
        command = "/bin/sh"
        args    = ["-c", "echo sandbox $NOMAD_ALLOC_DIR; sleep 2"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
